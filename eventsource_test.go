package eventsource_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
)

type Deposited struct {
	Account string `json:"account"`
	Cents   int64  `json:"cents"`
}

func (Deposited) EventType() string { return "Deposited" }

type Withdrawn struct{ Cents int64 }

// Pointer receiver: registering *Withdrawn must not call the method on nil.
func (w *Withdrawn) EventType() string { return "Withdrawn" }

type Impostor struct{}

func (Impostor) EventType() string { return "Deposited" }

type Nameless struct{}

func (Nameless) EventType() string { return "" }

func newRegistry(t *testing.T) *eventsource.Registry {
	t.Helper()
	r := eventsource.NewRegistry()
	if err := eventsource.Register[Deposited](r); err != nil {
		t.Fatal(err)
	}
	if err := eventsource.Register[*Withdrawn](r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRegistry(t *testing.T) {
	r := newRegistry(t)
	if err := eventsource.Register[Deposited](r); err != nil {
		t.Errorf("registering the same type twice = %v, want nil", err)
	}
	if err := eventsource.Register[Impostor](r); !errors.Is(err, eventsource.ErrInvalidEvent) {
		t.Errorf("another type under a taken name = %v, want ErrInvalidEvent", err)
	}
	if err := eventsource.Register[Nameless](r); !errors.Is(err, eventsource.ErrInvalidEvent) {
		t.Errorf("empty type name = %v, want ErrInvalidEvent", err)
	}
	if got := r.Types(); strings.Join(got, ",") != "Deposited,Withdrawn" {
		t.Errorf("Types() = %v", got)
	}

	e, err := r.Decode("Deposited", []byte(`{"account":"acc-1","cents":250}`))
	if err != nil || e != (Deposited{Account: "acc-1", Cents: 250}) {
		t.Errorf("Decode = %#v, %v", e, err)
	}
	w, err := r.Decode("Withdrawn", []byte(`{"Cents":7}`))
	if p, ok := w.(*Withdrawn); err != nil || !ok || p.Cents != 7 {
		t.Errorf("Decode pointer type = %#v, %v", w, err)
	}

	_, err = r.Decode("Nope", []byte(`{}`))
	var de *eventsource.DecodeError
	if !errors.Is(err, eventsource.ErrUnknownEventType) || !errors.As(err, &de) || de.Type != "Nope" {
		t.Errorf("unknown type = %v, want a *DecodeError matching ErrUnknownEventType", err)
	}
	_, err = r.Decode("Deposited", []byte(`{"cents":"lots"}`))
	var syntaxOrType *json.UnmarshalTypeError
	if !errors.Is(err, eventsource.ErrMalformed) || !errors.As(err, &syntaxOrType) {
		t.Errorf("malformed payload = %v, want ErrMalformed wrapping the JSON error", err)
	}
}

func TestRegistryNameValidator(t *testing.T) {
	r := newRegistry(t)
	noW := func(name string) error {
		if strings.HasPrefix(name, "W") {
			return errors.New("no W")
		}
		return nil
	}
	if err := r.SetNameValidator(noW); err == nil {
		t.Fatal("validator accepted an already registered name it refuses")
	}
	r2 := eventsource.NewRegistry()
	if err := r2.SetNameValidator(noW); err != nil {
		t.Fatal(err)
	}
	if err := eventsource.Register[*Withdrawn](r2); err == nil {
		t.Error("Register ignored the name validator")
	}
}

func TestCodecRoundTrip(t *testing.T) {
	codec := eventsource.NewJSONCodec(newRegistry(t))
	env := eventsource.NewEnvelope(Deposited{Account: "acc-1", Cents: 250})
	env.AggregateType, env.AggregateID, env.Version, env.Position = "Account", "acc-1", 3, 17
	env.Metadata = eventsource.Metadata{CorrelationID: "c", CausationID: "d", TenantID: "t", Extra: map[string]string{"k": "v"}}
	b, err := codec.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	got, err := codec.Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != env.ID || got.Type != "Deposited" || got.AggregateType != "Account" || got.AggregateID != "acc-1" ||
		got.Version != 3 || got.Position != 17 || !got.OccurredAt.Equal(env.OccurredAt) ||
		got.Metadata.CorrelationID != "c" || got.Metadata.Extra["k"] != "v" || got.Event != env.Event {
		t.Errorf("round trip changed the envelope:\n got %+v\nwant %+v", got, env)
	}
	if env.ID.Version() != 7 {
		t.Errorf("event ID is UUID v%d, want v7", env.ID.Version())
	}
}

// TestCodecWireFormat pins the field names the README documents.
func TestCodecWireFormat(t *testing.T) {
	codec := eventsource.NewJSONCodec(newRegistry(t))
	raw := `{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"Deposited","aggregate_type":"Account",
		"aggregate_id":"acc-9","version":2,"occurred_at":"2026-01-02T03:04:05.123456Z",
		"metadata":{"correlation_id":"corr","traceparent":"00-aa-bb-01"},"data":{"account":"acc-9","cents":5}}`
	env, err := codec.Unmarshal([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
	if env.AggregateID != "acc-9" || env.Version != 2 || !env.OccurredAt.Equal(want) ||
		env.Metadata.CorrelationID != "corr" || env.Metadata.TraceParent != "00-aa-bb-01" ||
		env.Event != (Deposited{Account: "acc-9", Cents: 5}) {
		t.Errorf("decoded %+v", env)
	}
	out, err := codec.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(out, &fields); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"id", "type", "aggregate_type", "aggregate_id", "version", "occurred_at", "metadata", "data"} {
		if _, ok := fields[f]; !ok {
			t.Errorf("encoded envelope lacks %q: %s", f, out)
		}
	}
}

func TestCodecRejectsGarbage(t *testing.T) {
	codec := eventsource.NewJSONCodec(newRegistry(t))
	cases := map[string]struct {
		in   string
		kind error
	}{
		"not json":       {`\x00\xffgarbage`, eventsource.ErrMalformed},
		"array":          {`[1,2,3]`, eventsource.ErrMalformed},
		"no type":        {`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","data":{}}`, eventsource.ErrMalformed},
		"bad id":         {`{"id":"x","type":"Deposited","data":{}}`, eventsource.ErrMalformed},
		"no data":        {`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"Deposited"}`, eventsource.ErrMalformed},
		"bad payload":    {`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"Deposited","data":{"cents":"x"}}`, eventsource.ErrMalformed},
		"unknown type":   {`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"Nope","data":{}}`, eventsource.ErrUnknownEventType},
		"truncated json": {`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"Depos`, eventsource.ErrMalformed},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := codec.Unmarshal([]byte(tc.in))
			var de *eventsource.DecodeError
			if !errors.Is(err, tc.kind) || !errors.As(err, &de) {
				t.Errorf("Unmarshal = %v, want a *DecodeError matching %v", err, tc.kind)
			}
		})
	}
}

func FuzzCodecUnmarshal(f *testing.F) {
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"Deposited","data":{"cents":1}}`))
	f.Add([]byte(`{"type":"Withdrawn","data":null}`))
	f.Add([]byte(`garbage`))
	r := eventsource.NewRegistry()
	eventsource.MustRegister[Deposited](r)
	eventsource.MustRegister[*Withdrawn](r)
	codec := eventsource.NewJSONCodec(r)
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := codec.Unmarshal(b)
		if err != nil {
			if !errors.Is(err, eventsource.ErrMalformed) && !errors.Is(err, eventsource.ErrUnknownEventType) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if env.Event == nil {
			t.Fatalf("decoded envelope without payload from %q", b)
		}
	})
}

func TestConflictError(t *testing.T) {
	err := error(&eventsource.ConflictError{StreamID: "s", Expected: 1, Actual: 2})
	var ce *eventsource.ConflictError
	if !errors.Is(err, eventsource.ErrConcurrencyConflict) || !errors.As(err, &ce) || ce.Actual != 2 {
		t.Errorf("ConflictError does not match: %v", err)
	}
}
