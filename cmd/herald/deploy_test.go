package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoFile reads a file at the repository's root.
func repoFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDockerComposeFlags checks that every node of docker-compose.yml,
// with the Dockerfile's and the compose file's environment, parses as a
// valid configuration: the flags exist and their values are valid.
func TestDockerComposeFlags(t *testing.T) {
	envs := map[string]string{}
	for _, m := range regexp.MustCompile(`(HERALD_[A-Z_]+)=(\S+)`).FindAllStringSubmatch(repoFile(t, "Dockerfile"), -1) {
		envs[m[1]] = m[2]
	}
	if envs["HERALD_RESP_ADDR"] != "0.0.0.0:6379" || envs["HERALD_HTTP_ADDR"] != "0.0.0.0:8080" {
		t.Fatalf("Dockerfile: the image must listen on every interface explicitly: %v", envs)
	}
	compose := repoFile(t, "docker-compose.yml")
	for _, m := range regexp.MustCompile(`(?m)^\s+(HERALD_[A-Z_]+): (.+)$`).FindAllStringSubmatch(compose, -1) {
		envs[m[1]] = strings.TrimSpace(m[2])
	}
	commands := regexp.MustCompile(`(?m)^\s+command: (\[.*\])$`).FindAllStringSubmatch(compose, -1)
	if len(commands) != 3 {
		t.Fatalf("docker-compose.yml: %d one-line command lists, want 3", len(commands))
	}
	for _, m := range commands {
		var args []string
		if err := json.Unmarshal([]byte(m[1]), &args); err != nil {
			t.Fatalf("command %s: %v", m[1], err)
		}
		c, err := parseConfig(args, env(envs), &bytes.Buffer{})
		if err != nil {
			t.Fatalf("compose command %v: %v", args, err)
		}
		if len(c.peers) != 3 || c.dataDir != "/var/lib/herald" || c.respAddr != "0.0.0.0:6379" {
			t.Fatalf("compose node %s: %+v", c.nodeID, c)
		}
		found := false
		for _, p := range c.peers {
			found = found || (p.ID == c.nodeID && p.Addr == c.raftAddr)
		}
		if !found {
			t.Fatalf("compose node %s (raft %s) is not among its peers %v", c.nodeID, c.raftAddr, c.peers)
		}
	}
}

// TestSystemdUnitFlags checks the systemd unit's command line, with the
// example config files in deploy/ in place of /etc/herald.
func TestSystemdUnitFlags(t *testing.T) {
	unit := repoFile(t, "deploy/herald.service")
	m := regexp.MustCompile(`(?m)^ExecStart=(\S+) (.*)$`).FindStringSubmatch(unit)
	if m == nil {
		t.Fatal("deploy/herald.service: no ExecStart")
	}
	var args []string
	for _, a := range strings.Fields(m[2]) {
		if strings.HasPrefix(a, "/etc/herald/") {
			a = filepath.Join("..", "..", "deploy", strings.TrimPrefix(a, "/etc/herald/"))
		}
		args = append(args, a)
	}
	c, err := parseConfig(args, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatalf("ExecStart %v: %v", args, err)
	}
	if c.dataDir != "/var/lib/herald" || !strings.Contains(unit, "StateDirectory=herald\n") {
		t.Fatalf("data dir %q does not match the unit's StateDirectory", c.dataDir)
	}
	if c.nodeID != "n1" || len(c.peers) != 3 || len(c.retain) != 2 || c.logFormat != "json" {
		t.Fatalf("deploy/herald.conf + node.conf: %+v", c)
	}
}
