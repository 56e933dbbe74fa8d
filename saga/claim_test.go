package saga_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource/saga"
)

// TestClaimDueHonoursLimit: ClaimDue claims at most limit deadlines, the
// earliest first, and a second call at the same time takes the next ones
// (the first are held), on every store.
func TestClaimDueHonoursLimit(t *testing.T) {
	name := uniqueName("claim")
	for _, b := range backends(t, name) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			store := b.open(t)
			for i := range 5 {
				inst := &saga.Instance{Saga: name, ID: fmt.Sprintf("i%d", i), State: []byte(`{}`)}
				for k := range 2 {
					inst.Deadlines = append(inst.Deadlines, saga.Deadline{
						ID: fmt.Sprintf("d%d-%d", i, k), Name: "expire", Due: t0.Add(time.Duration(2*i+k) * time.Minute)})
				}
				mustSave(t, store, inst)
			}
			now := t0.Add(time.Hour)
			seen := map[string]bool{}
			for round, want := range []int{3, 3, 3, 1, 0} {
				due, err := store.ClaimDue(ctx, name, now, time.Minute, 3)
				if err != nil {
					t.Fatal(err)
				}
				if len(due) != want {
					t.Fatalf("round %d: claimed %d deadlines with limit 3, want %d: %+v", round, len(due), want, due)
				}
				for i, d := range due {
					if seen[d.ID] {
						t.Fatalf("round %d: %s claimed again while held", round, d.ID)
					}
					seen[d.ID] = true
					if wantDue := t0.Add(time.Duration(3*round+i) * time.Minute); !d.Due.Equal(wantDue) {
						t.Errorf("round %d: deadline %d due %v, want %v (earliest first)", round, i, d.Due, wantDue)
					}
				}
			}
		})
	}
}
