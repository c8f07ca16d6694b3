package wsbridge_test

import (
	"testing"

	"github.com/herald-broker/herald/broker"
	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/wsbridge"
)

// TestWSThousandSubscribers connects 1,000 WebSocket subscribers to one
// channel at once; every one of them receives every message published, in
// order, exactly once, and nothing else.
func TestWSThousandSubscribers(t *testing.T) {
	n := startNode(t, broker.Config{}, raftstore.Config{}, wsbridge.Config{})
	const ch, subscribers, messages = "crowd", 1000, 50
	clients := make([]*wsClient, subscribers)
	for i := range clients {
		clients[i] = dialWS(t, n.wsURL(""), nil)
		clients[i].subscribe(ch, nil, 0)
	}
	first := n.publish(t, ch, []byte("m1"))
	if first.Seq != 1 || first.Receivers != subscribers {
		t.Fatalf("first publish: seq %d, %d receivers; want seq 1, %d", first.Seq, first.Receivers, subscribers)
	}
	epoch := n.publishRange(t, ch, 2, messages)
	if epoch != first.Epoch {
		t.Fatalf("epoch changed from %d to %d", first.Epoch, epoch)
	}
	for i, c := range clients {
		c.expectMessages(ch, epoch, 1, messages)
		c.barrier() // nothing more: no duplicate
		if t.Failed() {
			t.Fatalf("subscriber %d", i)
		}
	}
}
