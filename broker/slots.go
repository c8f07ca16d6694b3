package broker

// WriteSlots bounds how many subscribers' writers send at once. When one
// publish wakes thousands of writers, the ones beyond the slots wait
// parked, in the order they asked, instead of crowding the scheduler's run
// queue ahead of the goroutines that commit and apply the log; and each
// finds more messages queued for it when its turn comes.
type WriteSlots chan struct{}

// NewWriteSlots returns n slots.
func NewWriteSlots(n int) WriteSlots { return make(WriteSlots, n) }

// SlotHolder is one writer's use of the slots; only that writer calls its
// methods. A writer sends what its socket takes at once (WriteNow) under a
// slot; if the socket cannot take all of it, it calls Stall, which gives
// the slot back before the writer waits for the socket. Its next Take
// takes no slot unless a later write goes through at once: a client that
// stops reading never keeps a slot from the others.
type SlotHolder struct {
	slots   WriteSlots
	held    bool
	stalled bool
}

// NewSlotHolder returns a holder of slots.
func NewSlotHolder(slots WriteSlots) SlotHolder { return SlotHolder{slots: slots} }

// Take waits for a slot, unless the last write stalled.
func (h *SlotHolder) Take() {
	if !h.stalled {
		h.slots <- struct{}{}
		h.held = true
	}
}

// Give gives the slot back, if one is held.
func (h *SlotHolder) Give() {
	if h.held {
		h.held = false
		<-h.slots
	}
}

// Stall records that a write must wait for its socket, and gives the slot
// back.
func (h *SlotHolder) Stall() {
	h.Give()
	h.stalled = true
}

// Sent records that a write went through at once.
func (h *SlotHolder) Sent() { h.stalled = false }
