package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// TestFloor runs the floor workload for real, small: a writer process and
// this one's readers over loopback. Every connection must get frames, and
// the report must account for what was read.
func TestFloor(t *testing.T) {
	const conns, size = 40, 100
	res, err := runFloor(context.Background(), floorConfig{
		conns: conns, size: size, duration: 30 * time.Second, frames: 20_000,
		name: "machine", setup: 30 * time.Second, log: io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	printResult(&b, res)
	t.Logf("\n%s", b.String())
	if res.Failed {
		t.Fatalf("floor failed: %v", res.Failures)
	}
	if res.Deliveries < 20_000 {
		t.Errorf("read %d frames, want the run to go on until 20,000", res.Deliveries)
	}
	if res.Sent < res.Deliveries {
		t.Errorf("the writer reports %d frames written, fewer than the %d read", res.Sent, res.Deliveries)
	}
	// A gap is recorded at every read but each connection's first, and
	// the readers go on reading after the measured time.
	reads := uint64(float64(res.Deliveries) / res.DeliveriesPerRead)
	if res.FrameGap == nil || res.FrameGap.Count+conns < reads {
		t.Errorf("gap between frames: %+v, want one a read after each connection's first (%d reads)", res.FrameGap, reads)
	}
	if want := time.Duration(float64(conns) / res.DeliveryRate * float64(time.Second)); res.round() != want {
		t.Errorf("round %v, want %d connections at %.0f frames/s = %v", res.round(), conns, res.DeliveryRate, want)
	}
	for _, want := range []string{"frames", "gap between frames", "shortest round"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the printed result has no %q row", want)
		}
	}
}
