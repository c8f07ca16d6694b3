package raftstore

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/herald-broker/herald/broker"
)

// Rule limits the retained history of the channels whose names match
// Pattern (a Redis glob pattern). A zero limit other than MaxCount means no
// limit of that kind; MaxCount 0 keeps no history, though sequence numbers
// still count.
type Rule struct {
	Pattern  string
	MaxCount int
	MaxBytes int64
	MaxAge   time.Duration
}

// Policy is the retention configuration. It is replicated through the log,
// so every node applies the same one: the leader proposes its configured
// policy when it differs from the one in force.
type Policy struct {
	// Rules are tried in order; the first whose pattern matches a channel
	// applies. A channel no rule matches keeps no history.
	Rules []Rule
	// IdleTTL is how long after its last publish a channel that retains
	// nothing is forgotten: its sequence state is dropped and its next
	// publish starts a new epoch. 0 keeps channels forever.
	IdleTTL time.Duration
}

// Defaults of the retention policy.
const (
	DefaultRetainCount = 100
	DefaultRetainAge   = time.Hour
	DefaultIdleTTL     = time.Hour
)

// DefaultPolicy returns the policy in force until a leader proposes
// another: every channel keeps its last 100 messages for at most an hour, and
// is forgotten an hour after its last publish once nothing is retained. It
// is part of the replicated state machine's definition: changing it changes
// how a log is applied.
func DefaultPolicy() Policy {
	return Policy{
		Rules:   []Rule{{Pattern: "*", MaxCount: DefaultRetainCount, MaxAge: DefaultRetainAge}},
		IdleTTL: DefaultIdleTTL,
	}
}

// ruleFor returns the rule that applies to channel.
func (p *Policy) ruleFor(channel string) Rule {
	for _, r := range p.Rules {
		if broker.Match(r.Pattern, channel) {
			return r
		}
	}
	return Rule{}
}

// Equal reports whether p and q are the same policy.
func (p Policy) Equal(q Policy) bool {
	if p.IdleTTL != q.IdleTTL || len(p.Rules) != len(q.Rules) {
		return false
	}
	for i := range p.Rules {
		if p.Rules[i] != q.Rules[i] {
			return false
		}
	}
	return true
}

// String formats p as the --retain flags that give it.
func (p Policy) String() string {
	parts := make([]string, 0, len(p.Rules))
	for _, r := range p.Rules {
		parts = append(parts, r.String())
	}
	return fmt.Sprintf("%s idle=%s", strings.Join(parts, " "), p.IdleTTL)
}

// String formats r in ParseRule's syntax.
func (r Rule) String() string {
	limits := []string{strconv.Itoa(r.MaxCount)}
	if r.MaxBytes > 0 {
		limits = append(limits, strconv.FormatInt(r.MaxBytes, 10)+"B")
	}
	if r.MaxAge > 0 {
		limits = append(limits, r.MaxAge.String())
	}
	return r.Pattern + "=" + strings.Join(limits, ",")
}

// ParseRule parses a --retain value: PATTERN=LIMIT[,LIMIT...], where each
// limit is a message count ("500"), a size whose unit ends in b ("10mb",
// "512kb", "100b"; see ParseSize), or an age ("24h", "90m", "7d"). For example "chat:*=500,24h"
// keeps the last 500 messages of each chat:* channel for up to a day, and
// "presence:*=0" keeps no history for presence:* channels. A rule must give
// a count.
func ParseRule(s string) (Rule, error) {
	i := strings.LastIndexByte(s, '=')
	if i <= 0 || i == len(s)-1 {
		return Rule{}, fmt.Errorf("retention rule %q: want PATTERN=LIMIT[,LIMIT...]", s)
	}
	r := Rule{Pattern: s[:i], MaxCount: -1}
	for _, lim := range strings.Split(s[i+1:], ",") {
		lim = strings.TrimSpace(lim)
		if n, err := strconv.Atoi(lim); err == nil {
			if n < 0 || r.MaxCount >= 0 {
				return Rule{}, fmt.Errorf("retention rule %q: bad or repeated count %q", s, lim)
			}
			r.MaxCount = n
			continue
		}
		// A size in a rule must end in b (10mb, 512kb, 100b): "90m" is
		// ninety minutes, not 90,000,000 bytes.
		if n, ok := parseSize(lim); ok && strings.HasSuffix(strings.ToLower(lim), "b") {
			r.MaxBytes = n
			continue
		}
		if d, ok := parseAge(lim); ok {
			r.MaxAge = d
			continue
		}
		return Rule{}, fmt.Errorf("retention rule %q: %q is not a count, size (10MB) or age (24h, 7d)", s, lim)
	}
	if r.MaxCount < 0 {
		return Rule{}, fmt.Errorf("retention rule %q: give a message count, e.g. %s=100,1h", s, r.Pattern)
	}
	return r, nil
}

// sizeUnits are Redis's configuration units (1k = 1000, 1kb = 1024, ...),
// case-insensitive, plus the binary KiB, MiB and GiB.
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
	{"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30},
	{"k", 1000}, {"m", 1000 * 1000}, {"g", 1000 * 1000 * 1000},
	{"b", 1},
}

// ParseSize parses a byte size in Redis's configuration syntax: a number
// with an optional unit, case-insensitive: 1k is 1000 bytes and 1kb 1024,
// 1m is 1,000,000 and 1mb 1 MiB, 1g and 1gb likewise; KiB, MiB and GiB are
// accepted too. Retention rules and Herald's size flags use it.
func ParseSize(s string) (int64, error) {
	n, ok := parseSize(s)
	if !ok {
		return 0, fmt.Errorf("%q is not a size (e.g. 1048576, 1mb, 64kb)", s)
	}
	return n, nil
}

func parseSize(s string) (int64, bool) {
	lower := strings.ToLower(strings.TrimSpace(s))
	if n, err := strconv.ParseInt(lower, 10, 64); err == nil {
		return n, n >= 0
	}
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(lower, u.suffix); ok {
			n, err := strconv.ParseInt(num, 10, 64)
			if err != nil || n < 0 || n > (1<<62)/u.mult {
				return 0, false
			}
			return n * u.mult, true
		}
	}
	return 0, false
}

func parseAge(s string) (time.Duration, bool) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 100000 {
			return 0, false
		}
		return time.Duration(n) * 24 * time.Hour, true
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, false
	}
	return d.Truncate(time.Millisecond), true
}
