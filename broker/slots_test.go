package broker_test

import (
	"testing"

	"github.com/herald-broker/herald/broker"
)

// TestSlotHolder: a holder takes a slot until a write stalls, gives it
// back then, and takes none again until a write goes through at once.
func TestSlotHolder(t *testing.T) {
	slots := broker.NewWriteSlots(1)
	a, b := broker.NewSlotHolder(slots), broker.NewSlotHolder(slots)
	a.Take()
	if len(slots) != 1 {
		t.Fatalf("%d slots taken after Take, want 1", len(slots))
	}
	a.Stall()
	if len(slots) != 0 {
		t.Fatalf("%d slots taken after Stall, want 0", len(slots))
	}
	b.Take() // would block if a still held the only slot
	a.Take() // stalled: takes none
	a.Give()
	if len(slots) != 1 {
		t.Fatalf("%d slots taken with b holding one, want 1", len(slots))
	}
	b.Give()
	a.Sent()
	a.Take()
	if len(slots) != 1 {
		t.Fatalf("%d slots taken after a write went through and Take, want 1", len(slots))
	}
	a.Give()
	a.Give() // gives back only what it holds
	if len(slots) != 0 {
		t.Fatalf("%d slots taken after Give, want 0", len(slots))
	}
}
