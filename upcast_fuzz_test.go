package eventsource_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/eventsource-go/eventsource"
)

// stepped is at schema version 5; each upcaster records its step in Steps.
type stepped struct {
	Steps []int `json:"steps"`
}

func (stepped) EventType() string  { return "Stepped" }
func (stepped) SchemaVersion() int { return 5 }

// FuzzUpcastChain registers a random subset of the four steps of stepped,
// some failing or panicking, and decodes a random payload at a random
// version: the result is either every step from that version up to 5 run
// once in order, or a *DecodeError of the kind the registry promises.
func FuzzUpcastChain(f *testing.F) {
	f.Add(int64(1), uint8(0xf), uint8(0), uint8(0), []byte(`{"steps":[]}`), false)
	f.Add(int64(0), uint8(0xf), uint8(0), uint8(0), []byte(`{}`), true)
	f.Add(int64(3), uint8(0xc), uint8(0), uint8(0), []byte(`{}`), false)
	f.Add(int64(2), uint8(0xd), uint8(0), uint8(0), []byte(`{}`), false)
	f.Add(int64(2), uint8(0xf), uint8(0x4), uint8(0), []byte(`{}`), false)
	f.Add(int64(2), uint8(0xf), uint8(0), uint8(0x8), []byte(`{}`), true)
	f.Add(int64(5), uint8(0), uint8(0), uint8(0), []byte(`{"steps":[9]}`), false)
	f.Add(int64(6), uint8(0xf), uint8(0), uint8(0), []byte(`{}`), false)
	f.Add(int64(-1), uint8(0xf), uint8(0), uint8(0), []byte(`{}`), false)
	f.Add(int64(1<<40), uint8(0xf), uint8(0), uint8(0), []byte(`{}`), false)
	f.Add(int64(1), uint8(0xf), uint8(0), uint8(0), []byte(`[}`), false)
	f.Fuzz(func(t *testing.T, version int64, present, failing, panicking uint8, payload []byte, renamed bool) {
		r := eventsource.NewRegistry()
		eventsource.MustRegister[stepped](r)
		must(t, r.RegisterRename("SteppedBefore", "Stepped"))
		for from := 1; from < 5; from++ {
			bit := uint8(1) << (from - 1)
			if present&bit == 0 {
				continue
			}
			must(t, r.RegisterUpcaster("Stepped", from, func(b []byte) ([]byte, error) {
				switch {
				case panicking&bit != 0:
					panic(fmt.Sprintf("step %d", from))
				case failing&bit != 0:
					return nil, fmt.Errorf("step %d refuses", from)
				}
				var s stepped
				if err := json.Unmarshal(b, &s); err != nil {
					return nil, err
				}
				s.Steps = append(s.Steps, from)
				return json.Marshal(s)
			}))
		}
		name := "Stepped"
		if renamed {
			name = "SteppedBefore"
		}
		sv := int(min(max(version, -1<<31), 1<<31-1))
		e, gotName, err := r.DecodeVersion(name, sv, payload)

		from := max(sv, 0)
		if from == 0 {
			from = 1
		}
		var kind error
		var start stepped
		switch {
		case from < 1:
			kind = eventsource.ErrMalformed
		case from > 5:
			kind = eventsource.ErrUnknownSchemaVersion
		default:
			for v := from; v < 5 && kind == nil; v++ {
				if present&(1<<(v-1)) == 0 {
					kind = eventsource.ErrUnknownSchemaVersion
				}
			}
			if kind == nil && json.Unmarshal(payload, &start) != nil {
				kind = eventsource.ErrMalformed
			}
			for v := from; v < 5 && kind == nil; v++ {
				if (failing|panicking)&(1<<(v-1)) != 0 {
					kind = eventsource.ErrMalformed
				}
			}
		}
		if sv < 0 {
			kind = eventsource.ErrMalformed
		}
		if gotName != "Stepped" {
			t.Fatalf("DecodeVersion(%q) named it %q", name, gotName)
		}
		if kind != nil {
			var de *eventsource.DecodeError
			if !errors.Is(err, kind) || !errors.As(err, &de) || e != nil {
				t.Fatalf("version %d, steps %04b: %#v, %v; want a *DecodeError matching %v", sv, present, e, err, kind)
			}
			return
		}
		if err != nil {
			t.Fatalf("version %d, steps %04b, payload %q: %v", sv, present, payload, err)
		}
		want := start.Steps
		for v := from; v < 5; v++ {
			want = append(want, v)
		}
		if got := e.(stepped).Steps; !slices.Equal(got, want) {
			t.Fatalf("version %d: steps %v, want %v", sv, got, want)
		}
	})
}

// far declares a schema version no chain of upcasters can reach.
type far struct{}

func (far) EventType() string  { return "Far" }
func (far) SchemaVersion() int { return 1 << 50 }

// A type whose SchemaVersion is absurdly high is a missing step on
// decode, not a crash sizing a chain that cannot exist.
func TestUpcastToAnUnreachableVersion(t *testing.T) {
	r := eventsource.NewRegistry()
	eventsource.MustRegister[far](r)
	must(t, r.RegisterUpcaster("Far", 1, func(b []byte) ([]byte, error) { return b, nil }))
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %v", p)
			}
		}()
		_, _, err = r.DecodeVersion("Far", 1, []byte(`{}`))
	}()
	if !errors.Is(err, eventsource.ErrUnknownSchemaVersion) {
		t.Fatalf("DecodeVersion = %v, want ErrUnknownSchemaVersion", err)
	}
}
