package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeFile writes a config file under t.TempDir and returns its path.
func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func rules(c *config) string {
	var out []string
	for _, r := range c.retain {
		out = append(out, r.Pattern)
	}
	return strings.Join(out, " ")
}

// TestConfigFilePrecedence: flags > environment > later file > earlier
// file, setting by setting; a repeatable setting comes whole from one
// place.
func TestConfigFilePrecedence(t *testing.T) {
	base := writeFile(t, "base.conf", `# the base every environment shares
resp-addr 0.0.0.0:6379
http-addr 0.0.0.0:8080
data-dir /var/lib/herald
max-payload 64kb
retain chat:*=500,24h
retain *=100,1h
commit-timeout 3s
allow-any-origin yes
`)
	dev := writeFile(t, "dev.conf", `
# one developer's overrides
data-dir	./dev-data
retain dev:*=10
--commit-timeout 1s
requirepass "a secret # with \"quotes\""
`)
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c *config)
	}{
		{"base alone", []string{"--config", base}, nil, func(t *testing.T, c *config) {
			if c.respAddr != "0.0.0.0:6379" || c.dataDir != "/var/lib/herald" || c.maxPayload != 64<<10 ||
				c.commitTimeout != 3*time.Second || !c.allowAnyOrigin || rules(c) != "chat:* *" {
				t.Fatalf("%+v retain %q", c, rules(c))
			}
		}},
		{"override file wins setting by setting", []string{"--config", base, "--config", dev}, nil, func(t *testing.T, c *config) {
			if c.dataDir != "./dev-data" || c.commitTimeout != time.Second || c.requirePass != `a secret # with "quotes"` {
				t.Fatalf("override not applied: %+v", c)
			}
			if c.respAddr != "0.0.0.0:6379" || c.maxPayload != 64<<10 {
				t.Fatalf("base settings lost: %+v", c)
			}
			if rules(c) != "dev:*" {
				t.Fatalf("retain = %q, want the override's rules only", rules(c))
			}
		}},
		{"environment over files", []string{"--config", base, "--config", dev},
			map[string]string{"HERALD_DATA_DIR": "/env", "HERALD_RETAIN": "env:*=1"}, func(t *testing.T, c *config) {
				if c.dataDir != "/env" || rules(c) != "env:*" || c.commitTimeout != time.Second {
					t.Fatalf("%+v retain %q", c, rules(c))
				}
			}},
		{"flags over environment and files", []string{"--config", base, "--data-dir", "/flag", "--retain", "flag:*=2"},
			map[string]string{"HERALD_DATA_DIR": "/env", "HERALD_RETAIN": "env:*=1"}, func(t *testing.T, c *config) {
				if c.dataDir != "/flag" || rules(c) != "flag:*" || c.httpAddr != "0.0.0.0:8080" {
					t.Fatalf("%+v retain %q", c, rules(c))
				}
			}},
		{"HERALD_CONFIG names the files", nil, map[string]string{"HERALD_CONFIG": base + "," + dev}, func(t *testing.T, c *config) {
			if c.dataDir != "./dev-data" || c.respAddr != "0.0.0.0:6379" {
				t.Fatalf("%+v", c)
			}
		}},
		{"--config over HERALD_CONFIG", []string{"--config", base}, map[string]string{"HERALD_CONFIG": dev}, func(t *testing.T, c *config) {
			if c.dataDir != "/var/lib/herald" {
				t.Fatalf("data dir %q: HERALD_CONFIG was read", c.dataDir)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(tc.args, env(tc.env), &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestConfigFileErrors(t *testing.T) {
	tests := map[string]struct {
		text string
		want string
	}{
		"unknown setting": {"resp-addr :1\nno-such-thing 1\n", "x.conf:2: unknown setting \"no-such-thing\""},
		"bad value":       {"max-payload lots\n", "x.conf:1: max-payload \"lots\""},
		"bad bool":        {"allow-any-origin perhaps\n", "x.conf:1: allow-any-origin"},
		"bad quotes":      {"requirepass \"open\n", "x.conf:1: requirepass: bad quoted value"},
		"nested config":   {"config other.conf\n", "cannot name other config files"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := writeFile(t, "x.conf", tc.text)
			_, err := parseConfig([]string{"--config", p}, env(nil), &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, err := parseConfig([]string{"--config", filepath.Join(t.TempDir(), "missing.conf")}, env(nil), &bytes.Buffer{}); err == nil {
		t.Fatal("a missing config file was accepted")
	}
}

// TestConfigFileEveryFlag: every flag, including any added later, can be
// set from a file under its own name. Each flag is set to its default
// (flags whose default is empty get a valid value of their own).
func TestConfigFileEveryFlag(t *testing.T) {
	values := map[string]string{
		"peers":           "n1=127.0.0.1:7001",
		"retain":          "*=5",
		"allowed-origins": "example.com",
		"config":          "", // cannot appear in a file
		"join":            "", // excludes peers
	}
	var b strings.Builder
	n := 0
	newFlagSet(&config{}, &bytes.Buffer{}).VisitAll(func(f *flag.Flag) {
		v, ok := values[f.Name]
		if !ok {
			v = f.DefValue
		}
		if v == "" {
			return
		}
		b.WriteString(f.Name + " " + v + "\n")
		n++
	})
	if n < 20 {
		t.Fatalf("only %d flags written", n)
	}
	p := writeFile(t, "all.conf", b.String())
	c, err := parseConfig([]string{"--config", p}, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatalf("%v\nfile:\n%s", err, b.String())
	}
	if len(c.peers) != 1 || rules(c) != "*" || len(c.allowedOrigins) != 1 {
		t.Fatalf("%+v", c)
	}
}
