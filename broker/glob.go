package broker

import "strings"

// maxStarGroups is Redis's nesting limit: stringmatchlen recurses once per
// '*' group and gives up (no match) past 1000 levels.
const maxStarGroups = 1000

// IsPattern reports whether s contains a byte that is special in a Redis glob
// pattern: '*', '?', '[' or '\'. A string without one matches only itself.
func IsPattern(s string) bool {
	return literalLen(s) < len(s)
}

// special marks the bytes with a meaning in a glob pattern.
var special = [256]bool{'*': true, '?': true, '[': true, '\\': true}

// literalLen returns the length of the longest prefix of p with no special
// byte.
func literalLen(p string) int {
	for i := 0; i < len(p); i++ {
		if special[p[i]] {
			return i
		}
	}
	return len(p)
}

// Match reports whether name matches the Redis glob pattern, with the
// semantics of Redis 7's stringmatchlen (util.c) without case folding.
//
// Matching is byte-wise, not rune-wise: '*' matches any run of bytes, '?'
// exactly one byte, and "[...]" one byte from a class, where a leading '^'
// negates, "x-y" is an inclusive range whose ends may come in either order,
// and '\' makes the next byte literal. Outside a class '\' also makes the next
// byte literal. Redis's edge cases are kept:
//   - an empty name matches only the empty pattern, so "*" does not match "";
//   - "[]" is an empty class and "[^]" matches any byte;
//   - a '[' without a closing ']' runs to the end of the pattern;
//   - "[a-]" is the range 'a' to ']', not 'a' or '-';
//   - a lone '\' at the end of the pattern matches a backslash;
//   - range ends compare as signed bytes, as C's char does on x86-64, so
//     "[a-\xff]" covers 0xff and 0x00-'a' but not 0x80-0xfe;
//   - a pattern that would need a 1001st '*' group matches nothing.
//
// Match takes O(len(pattern)·len(name)) time at worst and does not allocate.
func Match(pattern, name string) bool {
	n := literalLen(pattern)
	if n == len(pattern) {
		return pattern == name
	}
	if len(name) < n || name[:n] != pattern[:n] {
		return false
	}
	if len(name) == n {
		// Redis strips trailing '*'s only after consuming a byte, so the
		// empty name matches no non-empty pattern.
		return n > 0 && strings.TrimLeft(pattern[n:], "*") == ""
	}
	if pattern[n] == '*' {
		// Fast path for "prefix*" and "prefix*suffix" with literal ends.
		j := n + 1
		for j < len(pattern) && pattern[j] == '*' {
			j++
		}
		suffix := pattern[j:]
		if literalLen(suffix) == len(suffix) {
			return len(name)-n >= len(suffix) && strings.HasSuffix(name, suffix)
		}
	}
	return matchRest(pattern, name, n, n)
}

// matchRest matches p[pi:] against s[si:], where si < len(s).
//
// It is Redis's recursion unrolled into a loop. Redis tries each split of the
// name at a '*' by recursing, but once a later '*' group has tried every split
// and failed, a longer match for an earlier one cannot help (Redis's
// skipLongerMatches). So only the latest '*' group is ever resumed, and when
// it runs out of name the match has failed.
func matchRest(p, s string, pi, si int) bool {
	var (
		groups    int  // '*' groups passed, Redis's nesting depth
		starP     = -1 // pattern index just after the latest '*' group
		starS     int  // name index the latest '*' group is trying
		starGroup int  // groups once the latest '*' group was passed
	)
	for {
		ok := false
		switch {
		case pi == len(p):
			// The pattern is used up before the name.
		case p[pi] == '*':
			for pi+1 < len(p) && p[pi+1] == '*' {
				pi++
			}
			if pi == len(p)-1 {
				return true
			}
			groups++
			if groups > maxStarGroups {
				return false
			}
			pi++
			if si = skipTo(p, pi, s, si); si < 0 {
				return false
			}
			starP, starS, starGroup = pi, si, groups
			continue
		default:
			pi, ok = matchByte(p, pi, s[si])
		}
		if ok {
			si++
			if si < len(s) {
				continue
			}
			for pi < len(p) && p[pi] == '*' {
				pi++
			}
			if pi == len(p) {
				return true
			}
		}
		// Let the latest '*' group swallow one more byte and retry.
		if starP < 0 {
			return false
		}
		if starS = skipTo(p, starP, s, starS+1); starS < 0 {
			return false
		}
		pi, si, groups = starP, starS, starGroup
	}
}

// skipTo returns the first name index at or after si where p[pi:] might start
// to match, or -1 if there is none. Redis would try each index in turn; when
// p[pi] is a literal byte the ones that cannot match are skipped in one search.
func skipTo(p string, pi int, s string, si int) int {
	if si >= len(s) {
		return -1
	}
	c := p[pi]
	switch c {
	case '?', '[':
		return si
	case '\\':
		if pi+1 < len(p) {
			c = p[pi+1]
		}
	}
	i := strings.IndexByte(s[si:], c)
	if i < 0 {
		return -1
	}
	return si + i
}

// matchByte matches the token at p[pi], which is not '*', against b. It
// returns the index after the token and whether b matched.
func matchByte(p string, pi int, b byte) (int, bool) {
	switch p[pi] {
	case '?':
		return pi + 1, true
	case '[':
		return matchClass(p, pi+1, b)
	case '\\':
		if pi+1 < len(p) {
			pi++
		}
	}
	return pi + 1, p[pi] == b
}

// matchClass matches the class whose body starts at p[i], just after '[',
// against b. It returns the index after the class and whether b matched.
func matchClass(p string, i int, b byte) (int, bool) {
	negate := i < len(p) && p[i] == '^'
	if negate {
		i++
	}
	in := false
	for ; i < len(p); i++ {
		switch {
		case p[i] == '\\' && i+1 < len(p):
			i++
			in = in || p[i] == b
		case p[i] == ']':
			return i + 1, in != negate
		case i+2 < len(p) && p[i+1] == '-':
			// C compares signed chars; reversed ends are swapped.
			lo, hi := int8(p[i]), int8(p[i+2])
			if lo > hi {
				lo, hi = hi, lo
			}
			in = in || lo <= int8(b) && int8(b) <= hi
			i += 2
		default:
			in = in || p[i] == b
		}
	}
	// No closing ']': Redis ends the class with the pattern.
	return i, in != negate
}
