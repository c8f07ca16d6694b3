package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseConfigDefaults(t *testing.T) {
	c, err := parseConfig(nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.respAddr != "127.0.0.1:6379" || c.httpAddr != "127.0.0.1:8080" || c.dataDir != "./herald-data" || c.requirePass != "" {
		t.Fatalf("defaults: %+v", c)
	}
	if c.maxPayload != 1<<20 || c.outboxHard != 32<<20 || c.outboxSoft != 8<<20 {
		t.Fatalf("limits: %+v", c)
	}
	if c.snapInterval != 120*time.Second || c.snapThreshold != 8192 || c.trailingLogs != 10240 {
		t.Fatalf("snapshots: every %s, %d entries, %d trailing; want hashicorp/raft's 2m0s, 8192, 10240", c.snapInterval, c.snapThreshold, c.trailingLogs)
	}
}

// TestParseConfigSnapshotBounds: the snapshot settings' smallest values
// are accepted, and one below each is refused.
func TestParseConfigSnapshotBounds(t *testing.T) {
	c, err := parseConfig([]string{"--snapshot-interval", "5ms", "--snapshot-threshold", "1", "--trailing-logs", "1"}, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.snapInterval != 5*time.Millisecond || c.snapThreshold != 1 || c.trailingLogs != 1 {
		t.Fatalf("snapshots: %s, %d, %d", c.snapInterval, c.snapThreshold, c.trailingLogs)
	}
	for flag, want := range map[string]string{
		"--snapshot-interval=4ms":  "--snapshot-interval 4ms: want at least 5ms",
		"--snapshot-threshold=0":   "--snapshot-threshold 0: want at least 1",
		"--trailing-logs=0":        "--trailing-logs 0: want at least 1",
		"--snapshot-threshold=-1":  "invalid value",
		"--snapshot-interval=soon": "invalid value",
	} {
		if _, err := parseConfig([]string{flag}, env(nil), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want %q", flag, err, want)
		}
	}
}

// TestParseConfigEnvAndFlags: every flag can come from HERALD_*, and a flag
// wins over the environment.
func TestParseConfigEnvAndFlags(t *testing.T) {
	e := env(map[string]string{
		"HERALD_RESP_ADDR":   "127.0.0.1:7777",
		"HERALD_DATA_DIR":    "/env/dir",
		"HERALD_REQUIREPASS": "fromenv",
		"HERALD_MAX_PAYLOAD": "64kb",
		"HERALD_PEERS":       "n1=a:1,n2=b:2",
		"HERALD_RETAIN":      "chat:*=500,24h",
	})
	c, err := parseConfig([]string{"--data-dir", "/flag/dir"}, e, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.respAddr != "127.0.0.1:7777" || c.requirePass != "fromenv" || c.maxPayload != 64<<10 {
		t.Fatalf("from env: %+v", c)
	}
	if c.dataDir != "/flag/dir" {
		t.Fatalf("flag did not win: %q", c.dataDir)
	}
	if len(c.peers) != 2 || c.peers[1].ID != "n2" || c.peers[1].Addr != "b:2" {
		t.Fatalf("peers: %+v", c.peers)
	}
	if len(c.retain) != 1 || c.retain[0].Pattern != "chat:*" || c.retain[0].MaxCount != 500 {
		t.Fatalf("retain: %+v", c.retain)
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := map[string]struct {
		args []string
		env  map[string]string
		want string
	}{
		"bad size":         {args: []string{"--max-payload", "lots"}, want: "not a size"},
		"bad peers":        {args: []string{"--peers", "n1"}, want: "want id=host:port"},
		"duplicate peer":   {args: []string{"--peers", "n1=a:1,n1=b:2"}, want: "given twice"},
		"join and peers":   {args: []string{"--peers", "n1=a:1", "--join", "b:2"}, want: "exclude each other"},
		"bad retain":       {args: []string{"--retain", "x=1h"}, want: "give a message count"},
		"stray argument":   {args: []string{"serve"}, want: "unexpected argument"},
		"bad env":          {env: map[string]string{"HERALD_MAX_CLIENTS": "many"}, want: "HERALD_MAX_CLIENTS"},
		"unknown flag":     {args: []string{"--nope"}, want: "not defined"},
		"bad election dur": {args: []string{"--raft-election-timeout", "soon"}, want: "invalid value"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := parseConfig(tt.args, env(tt.env), &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

// TestHelp: --help prints every flag, grouped, and exits 0.
func TestHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := parseConfig([]string{"--help"}, env(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err %v, want flag.ErrHelp", err)
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, env(nil), &stdout, &stderr); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	help := stderr.String()
	fs := newFlagSet(&config{}, &bytes.Buffer{})
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(help, "--"+f.Name) {
			t.Errorf("--help does not mention --%s", f.Name)
		}
	})
	for _, g := range flagGroups {
		for _, name := range g.names {
			if fs.Lookup(name) == nil {
				t.Errorf("help group %q lists unknown flag %q", g.title, name)
			}
		}
	}
}

func TestVersionAndBadFlagExitCodes(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--version"}, env(nil), &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "herald ") {
		t.Fatalf("--version: code %d, output %q", code, out.String())
	}
	if code := run(context.Background(), []string{"--max-clients", "x"}, env(nil), &out, &errb); code != 2 {
		t.Fatalf("bad flag: exit code %d, want 2", code)
	}
}
