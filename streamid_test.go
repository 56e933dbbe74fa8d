package eventsource_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/eventsource-go/eventsource"
)

// The collision that made two aggregates share one stream when stream IDs
// were type and ID joined by a plain dash.
func TestStreamIDCollision(t *testing.T) {
	a := eventsource.StreamID("Order-Item", "42")
	b := eventsource.StreamID("Order", "Item-42")
	if a == b {
		t.Fatalf(`StreamID("Order-Item", "42") = StreamID("Order", "Item-42") = %q`, a)
	}
}

func TestStreamID(t *testing.T) {
	for _, tc := range []struct{ typ, id, want string }{
		// Types without '-' or '%' keep the plain join, so stored data
		// stays readable.
		{"Order", "42", "Order-42"},
		{"Account", "acc-1", "Account-acc-1"},
		{"Order", "01890a5d-ac96-774b-bcce-b302099a8057", "Order-01890a5d-ac96-774b-bcce-b302099a8057"},
		{"Order", "", "Order-"},
		{"", "42", "-42"},
		{"orders.Order", "a%b", "orders.Order-a%b"},
		// The separator and the escape character are escaped in the type only.
		{"Order-Item", "42", "Order%2DItem-42"},
		{"Order", "Item-42", "Order-Item-42"},
		{"50%", "x-y", "50%25-x-y"},
		{"%2D", "1", "%252D-1"},
		{"-", "-", "%2D--"},
	} {
		got := eventsource.StreamID(tc.typ, tc.id)
		if got != tc.want {
			t.Errorf("StreamID(%q, %q) = %q, want %q", tc.typ, tc.id, got, tc.want)
		}
		typ, id, err := eventsource.ParseStreamID(got)
		if err != nil || typ != tc.typ || id != tc.id {
			t.Errorf("ParseStreamID(%q) = %q, %q, %v; want %q, %q", got, typ, id, err, tc.typ, tc.id)
		}
	}
}

func TestParseStreamIDRejects(t *testing.T) {
	// None of these is StreamID's output for any pair; a lowercase or
	// foreign escape would give a pair a second spelling.
	for _, s := range []string{"", "Order", "Order%2d-1", "Order%41-1", "Order%-1", "Order%2-1", "%", "a%zz-1"} {
		_, _, err := eventsource.ParseStreamID(s)
		if !errors.Is(err, eventsource.ErrInvalidStreamID) {
			t.Errorf("ParseStreamID(%q) = %v, want ErrInvalidStreamID", s, err)
		}
	}
}

// FuzzStreamID checks that StreamID is injective and ParseStreamID its
// exact inverse: Parse(StreamID(p)) = p for every pair p, which alone rules
// out two pairs sharing a stream; and StreamID(Parse(s)) = s for every s
// that parses, so no stream has two names.
func FuzzStreamID(f *testing.F) {
	f.Add("Order-Item", "42", "Order", "Item-42")
	f.Add("Order%2DItem", "42", "Order-Item", "42")
	f.Add("a%", "-b", "a%-", "b")
	f.Add("Order", "42", "Order", "42")
	f.Fuzz(func(t *testing.T, type1, id1, type2, id2 string) {
		s1, s2 := eventsource.StreamID(type1, id1), eventsource.StreamID(type2, id2)
		if s1 == s2 && (type1 != type2 || id1 != id2) {
			t.Fatalf("(%q, %q) and (%q, %q) share stream %q", type1, id1, type2, id2, s1)
		}
		if typ, id, err := eventsource.ParseStreamID(s1); err != nil || typ != type1 || id != id1 {
			t.Fatalf("ParseStreamID(StreamID(%q, %q) = %q) = %q, %q, %v", type1, id1, s1, typ, id, err)
		}
		if !strings.ContainsAny(type1, "-%") && s1 != type1+"-"+id1 {
			t.Fatalf("StreamID(%q, %q) = %q, want the plain join that existing data uses", type1, id1, s1)
		}
		// Any string, taken as a stream ID: if it parses, it is the one
		// name of its pair.
		raw := type2 + id2
		if typ, id, err := eventsource.ParseStreamID(raw); err == nil {
			if back := eventsource.StreamID(typ, id); back != raw {
				t.Fatalf("ParseStreamID(%q) = %q, %q, but StreamID of that is %q", raw, typ, id, back)
			}
		} else if !errors.Is(err, eventsource.ErrInvalidStreamID) {
			t.Fatalf("ParseStreamID(%q) = %v, want ErrInvalidStreamID", raw, err)
		}
	})
}
