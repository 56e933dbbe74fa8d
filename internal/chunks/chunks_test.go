package chunks

import (
	"errors"
	"testing"
)

func TestDelete(t *testing.T) {
	left := int64(25)
	n, err := Delete(10, func() (int64, error) {
		d := min(left, 10)
		left -= d
		return d, nil
	})
	if n != 25 || err != nil || left != 0 {
		t.Fatalf("Delete = %d, %v with %d left; want 25, nil, 0", n, err, left)
	}
	boom := errors.New("boom")
	calls := 0
	n, err = Delete(10, func() (int64, error) {
		calls++
		if calls == 2 {
			return 3, boom
		}
		return 10, nil
	})
	if n != 13 || !errors.Is(err, boom) || calls != 2 {
		t.Fatalf("Delete = %d, %v after %d calls; want 13, boom, 2", n, err, calls)
	}
}
