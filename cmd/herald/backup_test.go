package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// heraldCmd runs the herald binary with args and returns its combined
// output.
func heraldCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(heraldBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("herald %s did not finish within 60s:\n%s", strings.Join(args, " "), out.String())
		return "", nil
	}
}

func stop(t *testing.T, p *proc) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("herald did not exit after SIGTERM")
	}
}

// channelState is what HERALD.CHANNEL and HERALD.HISTORY say of each
// channel.
func channelState(t *testing.T, respAddr string, channels ...string) (string, map[string]string) {
	t.Helper()
	var b strings.Builder
	epochs := map[string]string{}
	for _, ch := range channels {
		info, err := cli(t, respAddr, "HERALD.CHANNEL", ch)
		if err != nil {
			t.Fatalf("HERALD.CHANNEL %s: %v: %s", ch, err, info)
		}
		hist, err := cli(t, respAddr, "HERALD.HISTORY", ch)
		if err != nil {
			t.Fatalf("HERALD.HISTORY %s: %v: %s", ch, err, hist)
		}
		// The epoch is compared apart: a restore renews it.
		info, epochs[ch] = maskEpoch(t, "HERALD.CHANNEL "+ch, info)
		var e string
		if hist, e = maskEpoch(t, "HERALD.HISTORY "+ch, hist); e != epochs[ch] {
			t.Fatalf("%s: epoch %s in HERALD.CHANNEL, %s in HERALD.HISTORY", ch, epochs[ch], e)
		}
		fmt.Fprintf(&b, "== %s\n%s\n%s\n", ch, info, hist)
	}
	return b.String(), epochs
}

// maskEpoch returns a reply with its epoch's value replaced, and the value.
func maskEpoch(t *testing.T, what, reply string) (string, string) {
	t.Helper()
	lines := strings.Split(reply, "\n")
	for i := 0; i+1 < len(lines); i++ {
		if lines[i] == "epoch" {
			epoch := lines[i+1]
			lines[i+1] = "<epoch>"
			return strings.Join(lines, "\n"), epoch
		}
	}
	t.Fatalf("%s has no epoch:\n%s", what, reply)
	return "", ""
}

// checkRenewed fails unless every channel is in one epoch, new to it.
func checkRenewed(t *testing.T, before, after map[string]string) {
	t.Helper()
	var renewed string
	for ch, e := range after {
		if e == before[ch] {
			t.Fatalf("channel %s kept epoch %s through the restore", ch, e)
		}
		if renewed != "" && e != renewed {
			t.Fatalf("restored channels in epochs %s and %s, want one", renewed, e)
		}
		renewed = e
	}
}

// TestBackupRestore backs a node up while it runs, wipes its data
// directory, restores it, and finds every channel's sequence and history
// as they were, in a new epoch (the old cluster may have numbered other
// messages after the backup); new publishes continue the sequences. The
// same backup then seeds a new three-node cluster whose other two nodes
// join empty and receive the state.
func TestBackupRestore(t *testing.T) {
	respAddr, raftAddr, dir := freeAddr(t), freeAddr(t), t.TempDir()
	args := []string{"--resp-addr", respAddr, "--http-addr", freeAddr(t), "--raft-addr", raftAddr, "--data-dir", dir,
		"--node-id", "n1", "--retain", "keep:*=3", "--retain", "*=1000"}
	p := startHerald(t, respAddr, args...)
	channels := []string{"orders", "keep:few", "gone"}
	for i := range 10 {
		for _, ch := range channels {
			if out, err := cli(t, respAddr, "HERALD.PUBLISH", ch, ch+"-"+strconv.Itoa(i)); err != nil || strings.HasPrefix(out, "ERR") {
				t.Fatalf("HERALD.PUBLISH: %q, %v", out, err)
			}
		}
	}
	// A deleted channel starts a new epoch: restored as it is now.
	if out, err := cli(t, respAddr, "HERALD.DELETE", "gone"); err != nil || out != "1" {
		t.Fatalf("HERALD.DELETE: %q, %v", out, err)
	}
	cli(t, respAddr, "HERALD.PUBLISH", "gone", "reborn")
	before, beforeEpochs := channelState(t, respAddr, channels...)

	backup := filepath.Join(t.TempDir(), "herald.backup")
	if out, err := heraldCmd(t, "backup", "--addr", respAddr, "--out", backup); err != nil {
		t.Fatalf("herald backup: %v\n%s", err, out)
	}
	if st, err := os.Stat(backup); err != nil || st.Size() < 100 {
		t.Fatalf("backup file: %v, %v", st, err)
	}
	stop(t, p)

	// Restore refuses a directory that holds a node.
	if out, err := heraldCmd(t, append(append([]string{"restore"}, args...), backup)...); err == nil || !strings.Contains(out, "already holds") {
		t.Fatalf("restore over existing state: %v\n%s", err, out)
	}
	// A damaged backup is refused.
	data, _ := os.ReadFile(backup)
	damaged := filepath.Join(t.TempDir(), "damaged.backup")
	data[len(data)/2] ^= 0xff
	os.WriteFile(damaged, data, 0o600)
	wipe := t.TempDir()
	if out, err := heraldCmd(t, "restore", "--data-dir", wipe, damaged); err == nil || !strings.Contains(out, "restore:") {
		t.Fatalf("restore of a damaged backup: %v\n%s", err, out)
	}
	if entries, _ := os.ReadDir(wipe); len(entries) != 0 {
		t.Fatalf("a failed restore left %d entries in the data directory", len(entries))
	}

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if out, err := heraldCmd(t, append(append([]string{"restore"}, args...), backup)...); err != nil {
		t.Fatalf("herald restore: %v\n%s", err, out)
	}
	p.start()
	waitFor(t, 30*time.Second, "the restored node to lead", func() bool {
		out, err := cli(t, respAddr, "HERALD.CLUSTER", "STATUS")
		return err == nil && strings.Contains(out, "state\nLeader")
	})
	after, afterEpochs := channelState(t, respAddr, channels...)
	if after != before {
		t.Fatalf("state after restore differs:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	checkRenewed(t, beforeEpochs, afterEpochs)
	// Sequences continue, in the new epoch.
	if out, err := cli(t, respAddr, "HERALD.PUBLISH", "orders", "after-restore"); err != nil || out != "11\n"+afterEpochs["orders"]+"\n0" {
		t.Fatalf("HERALD.PUBLISH after restore: %q, %v (want seq 11, epoch %s, 0 receivers)", out, err, afterEpochs["orders"])
	}
	stop(t, p)

	// Seed a new cluster: n1 restored alone, n2 and n3 join it empty.
	c1raft, c1resp := freeAddr(t), freeAddr(t)
	seedArgs := []string{"--node-id", "n1", "--raft-addr", c1raft, "--resp-addr", c1resp, "--http-addr", freeAddr(t), "--data-dir", t.TempDir()}
	if out, err := heraldCmd(t, append(append([]string{"restore"}, seedArgs...), backup)...); err != nil {
		t.Fatalf("herald restore (seed): %v\n%s", err, out)
	}
	startHerald(t, c1resp, seedArgs...)
	var joined []string
	for i := 2; i <= 3; i++ {
		r := freeAddr(t)
		startHerald(t, r, "--node-id", "n"+strconv.Itoa(i), "--raft-addr", freeAddr(t), "--resp-addr", r,
			"--http-addr", freeAddr(t), "--data-dir", t.TempDir(), "--join", c1raft)
		joined = append(joined, r)
	}
	for _, r := range joined {
		waitFor(t, 60*time.Second, "joined node "+r+" to hold the backup's state", func() bool {
			out, err := cli(t, r, "HERALD.HISTORY", "orders")
			return err == nil && strings.Contains(out, "orders-9")
		})
		got, gotEpochs := channelState(t, r, channels...)
		if got != before {
			t.Fatalf("state on joined node %s differs:\nwant:\n%s\ngot:\n%s", r, before, got)
		}
		checkRenewed(t, beforeEpochs, gotEpochs)
	}
}
