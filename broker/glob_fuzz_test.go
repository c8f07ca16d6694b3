package broker

import (
	"strings"
	"testing"
)

// FuzzMatch checks Match against refMatch, an independent model of Redis's
// matcher, and against properties that hold for every pattern and name.
func FuzzMatch(f *testing.F) {
	for _, tt := range matchTests {
		f.Add(tt.pattern, tt.name)
	}
	for _, seed := range [][2]string{
		{"a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaa"},
		{"*[a-]*\\", "x]y\\"},
		{"[^\\]*?", "\\*?"},
		{"*?*[", "abc"},
		{"[\x80-\x10]", "\xff"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if got, want := Match(pattern, name), refMatch(pattern, name); got != want {
			t.Fatalf("Match(%q, %q) = %v, model says %v", pattern, name, got, want)
		}

		// Without special bytes a pattern is a literal.
		lit := strings.Map(func(r rune) rune {
			if r == '*' || r == '?' || r == '[' || r == '\\' {
				return -1
			}
			return r
		}, pattern)
		if IsPattern(lit) {
			t.Fatalf("IsPattern(%q) = true", lit)
		}
		if got := Match(lit, name); got != (lit == name) {
			t.Fatalf("Match(%q, %q) = %v for a literal", lit, name, got)
		}

		// Escaping every byte makes a pattern that matches only name.
		esc := escapeAll(name)
		if !Match(esc, name) {
			t.Fatalf("Match(%q, %q) = false", esc, name)
		}
		if got := Match(esc, pattern); got != (pattern == name) {
			t.Fatalf("Match(%q, %q) = %v", esc, pattern, got)
		}

		// '*' matches every non-empty name, '?'s match by length.
		if got := Match("*", name); got != (name != "") {
			t.Fatalf("Match(\"*\", %q) = %v", name, got)
		}
		if !Match(strings.Repeat("?", len(name)), name) {
			t.Fatalf("Match(%d '?'s, %q) = false", len(name), name)
		}
		if Match(strings.Repeat("?", len(name)+1), name) {
			t.Fatalf("Match(%d '?'s, %q) = true", len(name)+1, name)
		}

		// A non-empty name matches an escaped prefix then '*', and '*' then
		// an escaped suffix. (Cut points are sampled: trying every one is
		// cubic in len(name).)
		if name == "" {
			return
		}
		for _, i := range []int{0, len(name) / 2, len(name) - 1} {
			if p := escapeAll(name[:i+1]) + "*"; !Match(p, name) {
				t.Fatalf("Match(%q, %q) = false", p, name)
			}
			if p := "*" + escapeAll(name[i:]); !Match(p, name) {
				t.Fatalf("Match(%q, %q) = false", p, name)
			}
		}
	})
}

// escapeAll backslash-escapes every byte of s.
func escapeAll(s string) string {
	var b strings.Builder
	for i := range len(s) {
		b.WriteByte('\\')
		b.WriteByte(s[i])
	}
	return b.String()
}

// refMatch is a model of Redis's stringmatchlen, written as directly as
// possible from its rules rather than for speed: it tries every split at each
// '*' (memoised, so it stays O(len(pattern)·len(name))), and parses each class
// into the set of bytes it accepts.
func refMatch(pattern, name string) bool {
	if name == "" {
		return pattern == ""
	}
	m := refMatcher{p: pattern, s: name, memo: map[[2]int]bool{}}
	return m.match(0, 0, 0)
}

type refMatcher struct {
	p, s string
	memo map[[2]int]bool
}

// match reports whether p[pi:] matches s[si:], at least one byte of s having
// been consumed if si == len(s), after passing depth '*' groups.
func (m *refMatcher) match(pi, si, depth int) bool {
	key := [2]int{pi, si}
	if v, ok := m.memo[key]; ok {
		return v
	}
	v := m.step(pi, si, depth)
	m.memo[key] = v
	return v
}

func (m *refMatcher) step(pi, si, depth int) bool {
	p, s := m.p, m.s
	if si == len(s) {
		return strings.Trim(p[pi:], "*") == ""
	}
	if pi == len(p) {
		return false
	}
	switch p[pi] {
	case '*':
		rest := pi
		for rest < len(p) && p[rest] == '*' {
			rest++
		}
		if rest == len(p) {
			return true
		}
		if depth == 1000 {
			return false
		}
		// Redis gives the rest of the pattern a non-empty rest of the name:
		// try it here, or let the '*' take one more byte.
		return m.match(rest, si, depth+1) || si+1 < len(s) && m.match(pi, si+1, depth)
	case '?':
		return m.match(pi+1, si+1, depth)
	case '[':
		set, next := refClass(p, pi+1)
		return set[s[si]] && m.match(next, si+1, depth)
	case '\\':
		if pi+1 < len(p) {
			pi++
		}
	}
	return p[pi] == s[si] && m.match(pi+1, si+1, depth)
}

// refClass parses the class body starting at p[i] and returns the bytes it
// accepts and the index after the class.
func refClass(p string, i int) (set [256]bool, next int) {
	negate := i < len(p) && p[i] == '^'
	if negate {
		i++
	}
	for i < len(p) && p[i] != ']' {
		switch {
		case p[i] == '\\' && i+1 < len(p):
			set[p[i+1]] = true
			i += 2
		case i+2 < len(p) && p[i+1] == '-':
			lo, hi := min(int8(p[i]), int8(p[i+2])), max(int8(p[i]), int8(p[i+2]))
			for c := lo; ; c++ {
				set[byte(c)] = true
				if c == hi {
					break
				}
			}
			i += 3
		default:
			set[p[i]] = true
			i++
		}
	}
	if i < len(p) {
		i++ // the closing ']'
	}
	if negate {
		for c := range set {
			set[c] = !set[c]
		}
	}
	return set, i
}
