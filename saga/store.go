package saga

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/internal/chunks"
)

// ErrConflict is returned by Store.Save when the instance changed since it
// was loaded. It matches eventsource.ErrConcurrencyConflict too.
var ErrConflict = fmt.Errorf("saga: instance changed concurrently: %w", eventsource.ErrConcurrencyConflict)

// Instance is the stored record of one saga instance.
type Instance struct {
	Saga string `json:"-"`
	ID   string `json:"-"`
	// Version counts the instance's writes; 0 until it is first saved.
	Version int64 `json:"-"`

	State json.RawMessage `json:"state,omitempty"`
	Ended bool            `json:"ended,omitempty"`
	// EndedAt is when the instance ended, to the millisecond, or zero
	// while it runs. The runner sets it from its clock; Save uses
	// time.Now when it is zero, keeps the first time stored, and sets it
	// to what it stored. It is the store's ended_at column, not part of
	// the document, so that PurgeEnded can select by it.
	EndedAt time.Time `json:"-"`
	// CorrelationID is the correlation of the event that started the
	// instance, given to commands its deadlines send.
	CorrelationID string `json:"correlation_id,omitempty"`
	// TenantID is the tenant of the event that started the instance, also
	// given to commands its deadlines send: a timeout's command acts for
	// the same tenant as the instance.
	TenantID string `json:"tenant_id,omitempty"`
	// Processed holds the IDs of the latest deliveries applied (events,
	// deadlines), newest last, at most MaxProcessed of them.
	Processed []string         `json:"processed,omitempty"`
	Outbox    []PendingCommand `json:"outbox,omitempty"`
	Deadlines []Deadline       `json:"deadlines,omitempty"`
}

// MaxProcessed bounds an instance's list of processed delivery IDs: a
// redelivery older than that many later deliveries to the same instance
// would be applied again.
const MaxProcessed = 1000

// Deadline is a scheduled wake-up of an instance.
type Deadline struct {
	ID       string    `json:"id"`
	Saga     string    `json:"-"`
	Instance string    `json:"-"`
	Name     string    `json:"name"`
	Due      time.Time `json:"due"`
}

// Store keeps saga instances and an index of their deadlines by due time.
type Store interface {
	// Load returns the instance, or one with Version 0 when none is stored.
	Load(ctx context.Context, saga, id string) (Instance, error)
	// Save writes inst if the stored version is still inst.Version (or
	// nothing is stored when it is 0), replacing the instance's deadlines
	// by inst.Deadlines in the same write, and increments inst.Version.
	// Otherwise it returns an error matching ErrConflict.
	Save(ctx context.Context, inst *Instance) error
	// ClaimDue returns up to limit deadlines of saga due at now and not
	// claimed, and claims them until now+hold so that other runners skip
	// them meanwhile.
	ClaimDue(ctx context.Context, saga string, now time.Time, hold time.Duration, limit int) ([]Deadline, error)
}

// Purger deletes ended instances; MemoryStore, SQLiteStore and
// PostgresStore implement it.
//
// An ended instance's record is also what makes a late redelivery of its
// events a no-op: once it is purged, a redelivered starting event starts a
// new instance. Purge only instances that ended longer ago than the
// longest redelivery or replay window of the buses that feed the saga,
// dead-letter replays included.
type Purger interface {
	// PurgeEnded deletes the instances of saga that ended before
	// endedBefore, with any deadlines and undispatched commands they
	// still have, and returns how many it deleted. Instances without an
	// end time (see the SQL stores' migrations) are kept. SQL stores
	// delete in chunks of DefaultPurgeChunk instances, one transaction
	// each, so that a large purge does not hold locks for long; after an
	// error, the chunks already committed stay deleted and the count
	// says how many instances they held.
	PurgeEnded(ctx context.Context, saga string, endedBefore time.Time) (int64, error)
}

// DefaultPurgeChunk is how many instances the SQL stores delete per
// transaction in PurgeEnded.
const DefaultPurgeChunk = 1000

// MemoryStore is a Store in memory, for tests and single-process use.
type MemoryStore struct {
	mu        sync.Mutex
	instances map[[2]string]memoryRow
	claims    map[string]time.Time // deadline ID -> claimed until
}

type memoryRow struct {
	version int64
	doc     []byte
	endedAt time.Time
}

var (
	_ Store  = (*MemoryStore)(nil)
	_ Purger = (*MemoryStore)(nil)
)

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{instances: map[[2]string]memoryRow{}, claims: map[string]time.Time{}}
}

// Load implements Store.
func (m *MemoryStore) Load(_ context.Context, saga, id string) (Instance, error) {
	m.mu.Lock()
	row, ok := m.instances[[2]string{saga, id}]
	m.mu.Unlock()
	if !ok {
		return Instance{Saga: saga, ID: id}, nil
	}
	inst, err := decodeInstance(saga, id, row.version, row.doc)
	inst.EndedAt = row.endedAt
	return inst, err
}

// Save implements Store.
func (m *MemoryStore) Save(_ context.Context, inst *Instance) error {
	doc, err := encodeInstance(inst)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	key := [2]string{inst.Saga, inst.ID}
	old := m.instances[key]
	if old.version != inst.Version {
		return fmt.Errorf("%w: %s %s at version %d", ErrConflict, inst.Saga, inst.ID, inst.Version)
	}
	ended := endTime(inst)
	if inst.Ended && !old.endedAt.IsZero() {
		ended = old.endedAt
	}
	m.instances[key] = memoryRow{version: inst.Version + 1, doc: doc, endedAt: ended}
	inst.Version++
	inst.EndedAt = ended
	return nil
}

// PurgeEnded implements Purger.
func (m *MemoryStore) PurgeEnded(_ context.Context, saga string, endedBefore time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for key, row := range m.instances {
		if key[0] != saga || row.endedAt.IsZero() || !row.endedAt.Before(endedBefore) {
			continue
		}
		// Its deadlines' claims match nothing now; ClaimDue drops them
		// once they expire.
		delete(m.instances, key)
		n++
	}
	return n, nil
}

// ClaimDue implements Store.
func (m *MemoryStore) ClaimDue(_ context.Context, saga string, now time.Time, hold time.Duration, limit int) ([]Deadline, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// An expired claim is as good as none: dropping it keeps the map to
	// the claims held now, not one per deadline ever fired.
	maps.DeleteFunc(m.claims, func(_ string, until time.Time) bool { return !until.After(now) })
	var due []Deadline
	for key, row := range m.instances {
		if key[0] != saga {
			continue
		}
		inst, err := decodeInstance(key[0], key[1], row.version, row.doc)
		if err != nil {
			return nil, err
		}
		for _, d := range inst.indexed() {
			if !d.Due.After(now) && !m.claims[d.ID].After(now) {
				due = append(due, d)
			}
		}
	}
	slices.SortFunc(due, func(a, b Deadline) int { return a.Due.Compare(b.Due) })
	if len(due) > limit {
		due = due[:limit]
	}
	for _, d := range due {
		m.claims[d.ID] = now.Add(hold)
	}
	return due, nil
}

// outboxDeadline names the deadline row that stands for an instance's
// undispatched commands: it comes due when their claim expires, so a
// runner's RunDeadlines dispatches what a crashed or failed dispatch left.
const outboxDeadline = "saga.outbox"

// outboxRowPrefix starts the ID of an outbox's row, which the deadlines a
// handler schedules (UUIDs) never do.
const outboxRowPrefix = "outbox/"

// isOutboxRow reports whether d is the row indexed() adds for an outbox,
// not a deadline a handler scheduled under the reserved name (which has
// no handler and is dropped when due).
func isOutboxRow(d Deadline) bool {
	return d.Name == outboxDeadline && strings.HasPrefix(d.ID, outboxRowPrefix)
}

// indexed returns the deadlines the store indexes for inst: its own, and
// one for its outbox while it has one.
func (inst *Instance) indexed() []Deadline {
	ds := inst.Deadlines
	if len(inst.Outbox) == 0 {
		return ds
	}
	due := inst.Outbox[0].ClaimedUntil
	for _, p := range inst.Outbox[1:] {
		if p.ClaimedUntil.Before(due) {
			due = p.ClaimedUntil
		}
	}
	return append(slices.Clone(ds), Deadline{
		ID:   fmt.Sprintf("%s%s/%s/%d", outboxRowPrefix, inst.Saga, inst.ID, due.UnixMilli()),
		Saga: inst.Saga, Instance: inst.ID, Name: outboxDeadline, Due: due,
	})
}

// purgeInChunks deletes ended instances of saga in chunks of chunk (see
// internal/chunks).
func purgeInChunks(saga string, chunk int, purgeChunk func() (int64, error)) (int64, error) {
	n, err := chunks.Delete(chunk, purgeChunk)
	if err != nil {
		return n, fmt.Errorf("saga: purge ended instances of %s: %w", saga, err)
	}
	return n, nil
}

// endTime is the time Save records for inst: none while it runs, else
// EndedAt or, when the caller left it zero, now. It is cut to the
// millisecond, the precision of the SQLite column, so that every store
// returns the same time.
func endTime(inst *Instance) time.Time {
	if !inst.Ended {
		return time.Time{}
	}
	t := inst.EndedAt
	if t.IsZero() {
		t = time.Now()
	}
	return time.UnixMilli(t.UnixMilli()).UTC()
}

// ceilMilli rounds t up to the millisecond: a stored end time, a whole
// millisecond, is before t exactly when it is before ceilMilli(t), which
// the SQL stores can compare at their precision.
func ceilMilli(t time.Time) time.Time {
	if r := t.Truncate(time.Millisecond); r.Before(t) {
		return r.Add(time.Millisecond)
	}
	return t
}

func encodeInstance(inst *Instance) ([]byte, error) {
	doc, err := json.Marshal(inst)
	if err != nil {
		return nil, fmt.Errorf("saga: encode %s %s: %w", inst.Saga, inst.ID, err)
	}
	return doc, nil
}

func decodeInstance(saga, id string, version int64, doc []byte) (Instance, error) {
	inst := Instance{Saga: saga, ID: id, Version: version}
	if err := json.Unmarshal(doc, &inst); err != nil {
		return Instance{}, fmt.Errorf("saga: decode %s %s: %w", saga, id, err)
	}
	for i := range inst.Deadlines {
		inst.Deadlines[i].Saga, inst.Deadlines[i].Instance = saga, id
	}
	return inst, nil
}
