package uuidtext

import (
	"testing"

	"github.com/google/uuid"
)

func TestAppendIsString(t *testing.T) {
	for range 100 {
		id := uuid.New()
		if got := string(Append([]byte("x"), id)); got != "x"+id.String() {
			t.Fatalf("Append = %q, want x%s", got, id)
		}
	}
	buf := make([]byte, 0, Len)
	id := uuid.New()
	if n := testing.AllocsPerRun(100, func() { buf = Append(buf[:0], id) }); n != 0 {
		t.Fatalf("Append into a buffer with room allocates %v times", n)
	}
}
