package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// A config file has redis.conf's shape, the format Herald's operators
// already know from Redis: one setting per line, a flag's name and its
// value, separated by spaces.
//
//	# base.conf
//	resp-addr 0.0.0.0:6379
//	data-dir /var/lib/herald
//	retain chat:*=500,24h
//	retain *=100,1h
//	requirepass "a secret # with spaces"
//
// Every flag is a setting, under its own name (without the dashes), so a
// flag added to newFlagSet is settable from a file with no further code.
// Lines starting with # are comments; there are no comments after a value
// (a password may contain #). A value in double quotes is read as a Go
// string literal (escapes allowed), one in single quotes as is. Booleans
// take yes/no as well as true/false. A repeatable flag (retain) takes one
// line per value.
//
// Several files may be given (--config base.conf --config prod.conf): a
// later file overrides an earlier one setting by setting, and a setting
// given in a later file replaces all of that setting's lines in earlier
// ones (so an override's retain rules replace the base's). The environment
// overrides the files, and flags override everything.

// setting is one line of a config file.
type setting struct {
	name, value string
	where       string // file:line
}

// readConfigFiles reads the files in order and returns the settings that
// take effect: for each name, the lines of the last file that sets it.
func readConfigFiles(paths []string, fs *flag.FlagSet) ([]setting, error) {
	files := make([][]setting, len(paths))
	last := map[string]int{} // name -> the last file that sets it
	for i, path := range paths {
		var err error
		if files[i], err = readConfigFile(path, fs); err != nil {
			return nil, err
		}
		for _, s := range files[i] {
			last[s.name] = i
		}
	}
	var out []setting
	for i, settings := range files {
		for _, s := range settings {
			if last[s.name] == i {
				out = append(out, s)
			}
		}
	}
	return out, nil
}

func readConfigFile(path string, fs *flag.FlagSet) ([]setting, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	var out []setting
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		where := fmt.Sprintf("%s:%d", path, n)
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, value, _ := strings.Cut(line, " ")
		if i := strings.IndexByte(name, '\t'); i >= 0 {
			name, value = line[:i], line[i+1:]
		}
		name = strings.TrimPrefix(name, "--")
		value = strings.TrimSpace(value)
		fl := fs.Lookup(name)
		if fl == nil {
			return nil, fmt.Errorf("%s: unknown setting %q (settings are the flags' names: herald --help)", where, name)
		}
		if name == "config" {
			return nil, fmt.Errorf("%s: a config file cannot name other config files: give each with --config", where)
		}
		if value, err = unquote(value); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", where, name, err)
		}
		if isBool(fl) {
			switch strings.ToLower(value) {
			case "yes", "":
				value = "true"
			case "no":
				value = "false"
			}
		}
		out = append(out, setting{name: name, value: value, where: where})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// unquote reads a value in double quotes as a Go string literal and one
// in single quotes as is; any other value is taken as written.
func unquote(v string) (string, error) {
	switch {
	case len(v) >= 1 && v[0] == '"':
		s, err := strconv.Unquote(v)
		if err != nil {
			return "", fmt.Errorf("bad quoted value %s", v)
		}
		return s, nil
	case len(v) >= 1 && v[0] == '\'':
		if len(v) < 2 || v[len(v)-1] != '\'' {
			return "", fmt.Errorf("unterminated quoted value %s", v)
		}
		return v[1 : len(v)-1], nil
	}
	return v, nil
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}
