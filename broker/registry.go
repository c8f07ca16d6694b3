package broker

import (
	"hash/maphash"
	"sort"
	"sync"
)

// registryShards is the number of independently locked slices of the channel
// map, so that subscribing on one channel does not wait for fan-out on
// another.
const registryShards = 64

// subscription is one client's interest in one channel, pattern or shard
// channel.
type subscription struct {
	client *Client
	kind   Kind
	name   string
	idx    int       // position in its subSet
	seq    *seqState // KindSequenced only
	// removed is set, under the registry lock, when the subscription is
	// unregistered.
	removed bool
}

// seqState tracks what a sequenced subscription has delivered. It is guarded
// by the registry lock of the subscription's channel: the delivering goroutine
// changes it under the read lock (there is only one deliverer at a time, see
// Broker.deliverMu), a catch-up under the write lock.
type seqState struct {
	pos          Position   // last message delivered
	catchingUp   bool       // history is being replayed; live messages wait in pending
	pending      []*Message // live messages that arrived during catch-up
	pendingBytes int
}

// subSet is the subscriptions of one channel or pattern, in a slice so that
// fan-out is a tight loop.
type subSet struct {
	subs []*subscription
}

func (s *subSet) add(sub *subscription) {
	sub.idx = len(s.subs)
	s.subs = append(s.subs, sub)
}

func (s *subSet) remove(sub *subscription) {
	last := len(s.subs) - 1
	moved := s.subs[last]
	s.subs[sub.idx] = moved
	moved.idx = sub.idx
	s.subs[last] = nil
	s.subs = s.subs[:last]
}

type regKey struct {
	ns   Namespace
	name string
}

type registryShard struct {
	mu       sync.RWMutex
	channels map[regKey]*subSet
}

// registry maps channels and patterns to their subscriptions.
type registry struct {
	seed   maphash.Seed
	shards [registryShards]registryShard

	patMu    sync.RWMutex
	patterns map[string]*subSet
	patList  []string // the keys of patterns, for a fast loop in fan-out
}

func (r *registry) init() {
	r.seed = maphash.MakeSeed()
	for i := range r.shards {
		r.shards[i].channels = make(map[regKey]*subSet)
	}
	r.patterns = make(map[string]*subSet)
}

func (r *registry) shard(name string) *registryShard {
	return &r.shards[maphash.String(r.seed, name)%registryShards]
}

// add registers sub. The caller has checked that the client does not already
// hold an equal subscription.
func (r *registry) add(sub *subscription) {
	if sub.kind == KindPattern {
		r.patMu.Lock()
		set := r.patterns[sub.name]
		if set == nil {
			set = &subSet{}
			r.patterns[sub.name] = set
			r.patList = append(r.patList, sub.name)
		}
		set.add(sub)
		r.patMu.Unlock()
		return
	}
	sh := r.shard(sub.name)
	key := regKey{sub.kind.Namespace(), sub.name}
	sh.mu.Lock()
	set := sh.channels[key]
	if set == nil {
		set = &subSet{}
		sh.channels[key] = set
	}
	set.add(sub)
	sh.mu.Unlock()
}

// remove unregisters sub. Once it returns, no frame for sub is pushed.
func (r *registry) remove(sub *subscription) {
	if sub.kind == KindPattern {
		r.patMu.Lock()
		sub.removed = true
		set := r.patterns[sub.name]
		set.remove(sub)
		if len(set.subs) == 0 {
			delete(r.patterns, sub.name)
			for i, p := range r.patList {
				if p == sub.name {
					r.patList[i] = r.patList[len(r.patList)-1]
					r.patList = r.patList[:len(r.patList)-1]
					break
				}
			}
		}
		r.patMu.Unlock()
		return
	}
	sh := r.shard(sub.name)
	key := regKey{sub.kind.Namespace(), sub.name}
	sh.mu.Lock()
	sub.removed = true
	set := sh.channels[key]
	set.remove(sub)
	if len(set.subs) == 0 {
		delete(sh.channels, key)
	}
	sh.mu.Unlock()
}

// channels returns the channels of ns with at least one subscriber whose
// name matches pattern ("" matches all), sorted.
func (r *registry) channels(ns Namespace, pattern string) []string {
	var out []string
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.RLock()
		for k := range sh.channels {
			if k.ns == ns && (pattern == "" || Match(pattern, k.name)) {
				out = append(out, k.name)
			}
		}
		sh.mu.RUnlock()
	}
	sort.Strings(out)
	return out
}

// countChannels returns the number of channels of ns with subscribers.
func (r *registry) countChannels(ns Namespace) int {
	n := 0
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.RLock()
		for k := range sh.channels {
			if k.ns == ns {
				n++
			}
		}
		sh.mu.RUnlock()
	}
	return n
}

// countSubscriptions returns the number of subscriptions of every kind.
func (r *registry) countSubscriptions() int {
	n := 0
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.RLock()
		for _, set := range sh.channels {
			n += len(set.subs)
		}
		sh.mu.RUnlock()
	}
	r.patMu.RLock()
	for _, set := range r.patterns {
		n += len(set.subs)
	}
	r.patMu.RUnlock()
	return n
}

// numSub returns the number of subscriptions to channel in ns.
func (r *registry) numSub(ns Namespace, channel string) int {
	sh := r.shard(channel)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if set := sh.channels[regKey{ns, channel}]; set != nil {
		return len(set.subs)
	}
	return 0
}

// numPat returns the number of distinct patterns subscribed to.
func (r *registry) numPat() int {
	r.patMu.RLock()
	defer r.patMu.RUnlock()
	return len(r.patterns)
}
