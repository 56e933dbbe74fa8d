package main

import (
	"errors"
	"testing"
)

func TestOrderRefusesInvalidCommands(t *testing.T) {
	o := newOrder()
	o.SetID("o1")
	if err := o.Ship("DHL"); !errors.Is(err, ErrNotPlaced) {
		t.Errorf("ship before place = %v, want ErrNotPlaced", err)
	}
	if err := o.Place("a@example.com", 0); !errors.Is(err, ErrInvalidTotal) {
		t.Errorf("place with zero total = %v, want ErrInvalidTotal", err)
	}
	if err := o.Place("a@example.com", 100); err != nil {
		t.Fatal(err)
	}
	if err := o.Place("a@example.com", 100); !errors.Is(err, ErrAlreadyPlaced) {
		t.Errorf("second place = %v, want ErrAlreadyPlaced", err)
	}
	if err := o.Ship("DHL"); err != nil {
		t.Fatal(err)
	}
	if err := o.Cancel("late"); !errors.Is(err, ErrShipped) {
		t.Errorf("cancel after ship = %v, want ErrShipped", err)
	}
	if got := len(o.Pending()); got != 2 {
		t.Errorf("%d pending events, want 2 (refused commands raise nothing)", got)
	}
}
