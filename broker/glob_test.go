package broker

import (
	"fmt"
	"strings"
	"testing"
)

// matchTests pins Match to Redis. Every row was checked against
// redis-server 7.0.15, both with KEYS (after SET name) and with PSUBSCRIBE
// pattern + PUBLISH name.
var matchTests = []struct {
	pattern, name string
	want          bool
}{
	// Empty pattern and name: an empty name matches only the empty pattern.
	{"", "", true},
	{"", "a", false},
	{"a", "", false},
	{"*", "", false},
	{"**", "", false},
	{"?", "", false},
	{"[a]", "", false},
	{"\\", "", false},

	// Literals.
	{"hello", "hello", true},
	{"hello", "hell", false},
	{"hello", "hello!", false},
	{"hello", "Hello", false},

	// The examples from the PSUBSCRIBE docs.
	{"h?llo", "hello", true},
	{"h?llo", "hallo", true},
	{"h?llo", "hllo", false},
	{"h*llo", "hllo", true},
	{"h*llo", "heeeello", true},
	{"h*llo", "hello!", false},
	{"h[ae]llo", "hello", true},
	{"h[ae]llo", "hallo", true},
	{"h[ae]llo", "hillo", false},
	{"h[^e]llo", "hallo", true},
	{"h[^e]llo", "hbllo", true},
	{"h[^e]llo", "hello", false},
	{"h[a-b]llo", "hallo", true},
	{"h[a-b]llo", "hbllo", true},
	{"h[a-b]llo", "hcllo", false},

	// '*': any run of bytes; runs collapse; a trailing one matches at once,
	// but only after at least one byte.
	{"*", "a", true},
	{"*", "anything at all", true},
	{"**", "a", true},
	{"***a***", "a", true},
	{"a*", "a", true},
	{"a**", "a", true},
	{"a*", "abc", true},
	{"a*", "ba", false},
	{"*a", "a", true},
	{"*a", "ba", true},
	{"*a", "ab", false},
	{"*a*", "bab", true},
	{"a*b*c", "abc", true},
	{"a*b*c", "axxbyyc", true},
	{"a*b*c", "axxbyy", false},
	{"a*b*c", "acb", false},
	{"a*?", "a", false},
	{"a*?", "ab", true},
	{"*?*", "a", true},
	{"news.*", "news.art", true},
	{"news.*", "news.", true},
	{"news.*", "news", false},
	{"*.events", "user.events", true},
	{"*.events", ".events", true},
	{"*.events", "events", false},
	{"user.*.inbox", "user.42.inbox", true},
	{"user.*.inbox", "user..inbox", true},
	{"user.*.inbox", "user.inbox", false},
	{"user.*.inbox", "user.42.inbox2", false},
	{"a*a", "a", false},
	{"a*a", "aa", true},
	{"ab*ba", "aba", false},
	{"ab*ba", "abba", true},
	{"ab**", "ab", true},

	// '?': exactly one byte.
	{"?", "a", true},
	{"?", "ab", false},
	{"??", "a", false},
	{"?*", "a", true},
	{"*?", "ab", true},

	// Classes.
	{"[abc]", "b", true},
	{"[abc]", "d", false},
	{"[abc]", "ab", false},
	{"[^abc]", "d", true},
	{"[^abc]", "a", false},
	{"[^]", "x", true},
	{"[^]", "]", true},
	{"[^]]", "]", false},
	{"[^]]", "a]", true},
	{"[]", "]", false},
	{"[]", "x", false},
	{"[]a]", "a]", false},
	{"[]a]", "]", false},
	{"[a-z]", "m", true},
	{"[a-z]", "a", true},
	{"[a-z]", "z", true},
	{"[a-z]", "A", false},
	{"[z-a]", "m", true},
	{"[z-a]", "A", false},
	{"[0-9a-f]x", "cx", true},
	{"[0-9a-f]x", "gx", false},
	{"[a-]", "a", true},
	{"[a-]", "]", true},
	{"[a-]", "^", true},
	{"[a-]", "-", false},
	{"[-a]", "-", true},
	{"[a-c-e]", "-", true},
	{"[a-c-e]", "d", false},
	{"[*]", "*", true},
	{"[*]", "a", false},
	{"[?]", "a", false},
	{"[[]", "[", true},
	{"[^^]", "^", false},
	{"[a^]", "^", true},

	// Escapes inside a class.
	{"[\\]]", "]", true},
	{"[\\]]", "\\", false},
	{"[\\^a]", "^", true},
	{"[\\-]", "-", true},
	{"[a\\-z]", "-", true},
	{"[a\\-z]", "m", false},
	{"[\\\\]", "\\", true},
	{"[a-\\]]", "\\", false},
	{"[a-\\]]", "]", false},
	{"[a-\\]]", "]]", true},
	{"[a-\\]]", "_]", true},

	// A '[' without ']' runs to the end of the pattern.
	{"[", "[", false},
	{"[", "a", false},
	{"a[", "a", false},
	{"a[", "a[", false},
	{"[^", "x", true},
	{"[^", "^", true},
	{"[ab", "a", true},
	{"[ab", "b", true},
	{"[ab", "ab", false},
	{"[^ab", "c", true},
	{"[^ab", "a", false},
	{"[a*", "*", true},
	{"[a*", "ab", false},
	{"[a-", "-", true},
	{"[a-c", "b", true},
	{"[\\", "\\", true},
	{"[\\", "\x00", false},
	{"[a\\", "\\", true},
	{"x[a", "xa", true},

	// Escapes outside a class.
	{"\\*", "*", true},
	{"\\*", "a", false},
	{"\\?", "?", true},
	{"\\?", "a", false},
	{"\\[a]", "[a]", true},
	{"\\\\", "\\", true},
	{"\\a", "a", true},
	{"a\\*b", "a*b", true},
	{"a\\*b", "axb", false},
	{"\\", "\\", true},
	{"a\\", "a\\", true},
	{"a\\", "a", false},
	{"*\\", "x\\", true},

	// Binary bytes. Range ends compare as signed chars, as on x86-64.
	{"\x00", "\x00", true},
	{"a\x00b", "a\x00b", true},
	{"a\x00b", "a", false},
	{"?", "\x00", true},
	{"?", "\xff", true},
	{"*\x00", "ab\x00", true},
	{"[\x00]", "\x00", true},
	{"[\xff]", "\xff", true},
	{"[^\xff]", "\xfe", true},
	{"\xe4\xb8\xad", "\xe4\xb8\xad", true},
	{"?", "\xe4\xb8\xad", false},
	{"???", "\xe4\xb8\xad", true},
	{"[\x80-\xff]", "\x90", true},
	{"[\x80-\xff]", "a", false},
	{"[a-\xff]", "\xff", true},
	{"[a-\xff]", "\x00", true},
	{"[a-\xff]", "a", true},
	{"[a-\xff]", "b", false},
	{"[a-\xff]", "\x80", false},
	{"[\x01-\x80]", "\x40", false},
	{"[\x01-\x80]", "\x90", true},
}

func TestMatch(t *testing.T) {
	for _, tt := range matchTests {
		t.Run(label(tt.pattern, tt.name), func(t *testing.T) {
			if got := Match(tt.pattern, tt.name); got != tt.want {
				t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
			}
		})
	}
}

// TestMatchNesting checks Redis's limit of 1000 nested '*' groups: a pattern
// that needs a 1001st group matches nothing, a trailing group is free.
func TestMatchNesting(t *testing.T) {
	r := strings.Repeat
	tests := []struct {
		desc, pattern, name string
		want                bool
	}{
		{"1000 groups", r("*a", 1000), r("a", 1000), true},
		{"1001 groups", r("*a", 1001), r("a", 1001), false},
		{"1001 groups, longer name", r("*a", 1001), r("a", 3000), false},
		{"1000 groups then trailing", r("*a", 1000) + "*", r("a", 1001), true},
		{"1000 inner groups", r("a*", 1001), r("a", 1001), true},
		{"1001 inner groups", r("a*", 1002), r("a", 1002), false},
		{"1001 inner groups, name ends early", r("a*", 1002), r("a", 1001), false},
		{"1000 groups of ?", r("*?", 1000), r("a", 1000), true},
		{"1001 groups of ?", r("*?", 1001), r("a", 1001), false},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if got := Match(tt.pattern, tt.name); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestMatchAdversarial runs patterns that take exponential time in a naive
// backtracking matcher. It asserts results only; the point is that it ends.
func TestMatchAdversarial(t *testing.T) {
	as := strings.Repeat("a", 10000)
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"a*a*a*a*a*a*a*a*a*b", as, false},
		{"a*a*a*a*a*a*a*a*a*b", as + "b", true},
		{"*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*c", as, false},
		{"?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*[b]", as, false},
		{"*" + strings.Repeat("a", 100) + "b", as, false},
		{strings.Repeat("*a", 999) + "b", as, false},
	}
	for _, tt := range tests {
		t.Run(label(tt.pattern, tt.name), func(t *testing.T) {
			if got := Match(tt.pattern, tt.name); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMatchAllocs(t *testing.T) {
	for _, tt := range matchTests {
		if n := testing.AllocsPerRun(10, func() { Match(tt.pattern, tt.name) }); n != 0 {
			t.Errorf("Match(%q, %q) allocates %v times", tt.pattern, tt.name, n)
		}
	}
}

func TestIsPattern(t *testing.T) {
	tests := []struct {
		s    string
		want bool
	}{
		{"", false},
		{"news", false},
		{"news.art-1^]", false},
		{"\x00\xff", false},
		{"news.*", true},
		{"h?llo", true},
		{"h[ae]llo", true},
		{"a\\b", true},
	}
	for _, tt := range tests {
		t.Run(label(tt.s, ""), func(t *testing.T) {
			if got := IsPattern(tt.s); got != tt.want {
				t.Errorf("IsPattern(%q) = %v, want %v", tt.s, got, tt.want)
			}
		})
	}
}

// label names a subtest after a pattern and name, shortened to stay readable.
func label(pattern, name string) string {
	short := func(s string) string {
		if len(s) > 24 {
			return fmt.Sprintf("%q...(%d bytes)", s[:16], len(s))
		}
		return fmt.Sprintf("%q", s)
	}
	return short(pattern) + "~" + short(name)
}

func BenchmarkMatch(b *testing.B) {
	as := strings.Repeat("a", 10000)
	benchmarks := []struct {
		desc, pattern, name string
	}{
		{"literal", "news.sport.football", "news.sport.football"},
		{"literal-miss", "news.sport.football", "news.sport.footbal!"},
		{"prefix", "news.sport.*", "news.sport.football"},
		{"prefix-miss", "news.sport.*", "news.weather.today"},
		{"suffix", "*.football", "news.sport.football"},
		{"question", "h?llo", "hello"},
		{"class", "news.[a-z]port.*", "news.sport.football"},
		{"infix", "user.*.inbox", "user.42.inbox"},
		{"two-stars", "news.*.foot*", "news.sport.football"},
		{"adversarial", "a*a*a*a*a*a*a*a*a*b", as},
		{"adversarial-class", "?*?*?*?*?*?*?*?*?*[b]", as},
	}
	for _, bm := range benchmarks {
		b.Run(bm.desc, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Match(bm.pattern, bm.name)
			}
		})
	}
}
