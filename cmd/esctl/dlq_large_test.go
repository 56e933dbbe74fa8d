package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/eventsource-go/eventsource/bus/consumer"
)

// hugeAdmin is a dead-letter queue of n records, id-0000000 onwards, that
// fails a read past maxPage pages: the record sought is on the first one.
type hugeAdmin struct {
	consumer.Admin // nil: only List is called
	n, maxPage     int
	pages          int
}

var errReadTooFar = errors.New("read the whole queue to find one record")

func (a *hugeAdmin) List(_ context.Context, after string, limit int) ([]consumer.DeadLetter, error) {
	if a.pages++; a.pages > a.maxPage {
		return nil, errReadTooFar
	}
	from := 0
	if after != "" {
		n, _ := strconv.Atoi(strings.TrimPrefix(after, "id-"))
		from = n + 1
	}
	var out []consumer.DeadLetter
	for i := from; i < min(from+limit, a.n); i++ {
		out = append(out, consumer.DeadLetter{ID: fmt.Sprintf("id-%07d", i), Reason: "permanent",
			Body: make([]byte, 4<<10)}) // a fresh body each, as a broker's reply is
	}
	return out, nil
}

type hugeBroker struct {
	broker // nil: only groups and admin are called
	adm    *hugeAdmin
}

func (b hugeBroker) groups(context.Context) ([]string, error) { return []string{"g"}, nil }
func (b hugeBroker) admin(context.Context, string) (consumer.Admin, error) {
	return b.adm, nil
}

// Finding one record by ID reads no further than that record, so that a
// queue of millions neither takes minutes nor all memory to show one.
func TestFindByIDStopsAtTheRecord(t *testing.T) {
	e, _ := testEnv(t)
	ctx := context.Background()

	b := hugeBroker{adm: &hugeAdmin{n: 1_000_000, maxPage: 1}}
	if r, err := find(ctx, e, b, "id-0000003"); err != nil || r.rec.ID != "id-0000003" {
		t.Errorf("find: %+v, %v", r.rec.ID, err)
	}

	b = hugeBroker{adm: &hugeAdmin{n: 1_000_000, maxPage: 1}}
	c := &console{e: e, loopback: true, broker: b}
	rec := httptest.NewRecorder()
	c.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8080/api/deadletters/g/id-0000003", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"id-0000003"`) {
		t.Errorf("console show: %d %s", rec.Code, rec.Body)
	}
}
