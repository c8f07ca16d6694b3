package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/herald-broker/herald/raftstore"
	"github.com/herald-broker/herald/resp"
)

// fileBackup is a backup written to a temporary file in the data
// directory, served by HERALD.BACKUP and removed when closed.
type fileBackup struct {
	*os.File
	size int64
}

func (b *fileBackup) Size() int64 { return b.size }

func (b *fileBackup) Close() error {
	err := b.File.Close()
	os.Remove(b.Name())
	return err
}

// backupToFile writes a backup of store into a temporary file in dir.
func backupToFile(store *raftstore.Store, dir string) (resp.Backup, error) {
	f, err := os.CreateTemp(dir, "backup-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("create backup file: %w", err)
	}
	b := &fileBackup{File: f}
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := store.Backup(w); err != nil {
		b.Close()
		return nil, err
	}
	if err := w.Flush(); err != nil {
		b.Close()
		return nil, fmt.Errorf("write backup file: %w", err)
	}
	if b.size, err = f.Seek(0, io.SeekCurrent); err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// runBackup is "herald backup": it asks a running node for a backup over
// RESP (HERALD.BACKUP) and writes it to a file.
func runBackup(args []string, env func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("herald backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:6379", "RESP `address` of the node to back up")
	user := fs.String("user", "", "user to AUTH as (default: the default user)")
	password := fs.String("password", "", "password to AUTH with (or set REDISCLI_AUTH, as for redis-cli)")
	out := fs.String("out", "", "backup `file` to write; - for standard output (required)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: herald backup --addr host:port --out FILE\n\nWrites a consistent copy of a running node's state (channels, sequences,\nretained history, retention policy) to FILE. Restore it with herald restore.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	if *password == "" {
		*password = env("REDISCLI_AUTH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	n, err := fetchBackup(ctx, *addr, *user, *password, *out, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "herald backup:", err)
		return 1
	}
	if *out != "-" {
		fmt.Fprintf(stderr, "herald backup: wrote %d bytes to %s\n", n, *out)
	}
	return 0
}

// fetchBackup runs HERALD.BACKUP on addr and writes the reply to path
// (through a temporary file renamed at the end, so a failed backup leaves
// no partial file), or to stdout for "-".
func fetchBackup(ctx context.Context, addr, user, password, path string, stdout io.Writer) (int64, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	r := bufio.NewReaderSize(nc, 1<<20)
	if password != "" {
		cmd := []string{"AUTH", password}
		if user != "" {
			cmd = []string{"AUTH", user, password}
		}
		if _, err := nc.Write(respCommand(cmd...)); err != nil {
			return 0, err
		}
		line, err := readLine(r)
		if err != nil {
			return 0, err
		}
		if line != "+OK" {
			return 0, fmt.Errorf("AUTH: %s", strings.TrimPrefix(line, "-"))
		}
	}
	if _, err := nc.Write(respCommand("HERALD.BACKUP")); err != nil {
		return 0, err
	}
	line, err := readLine(r)
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(line, "$") {
		return 0, fmt.Errorf("HERALD.BACKUP: %s", strings.TrimPrefix(line, "-"))
	}
	size, err := strconv.ParseInt(line[1:], 10, 64)
	if err != nil || size < 0 {
		return 0, fmt.Errorf("HERALD.BACKUP: unexpected reply %q", line)
	}
	if path == "-" {
		if _, err := io.CopyN(stdout, r, size); err != nil {
			return 0, fmt.Errorf("receive backup: %w", err)
		}
		return size, nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name()) // after the rename, a no-op
	if _, err := io.CopyN(f, r, size); err != nil {
		f.Close()
		return 0, fmt.Errorf("receive backup: %w", err)
	}
	if crlf, err := readLine(r); err != nil || crlf != "" {
		f.Close()
		return 0, fmt.Errorf("receive backup: no CRLF after %d bytes", size)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	return size, os.Rename(f.Name(), path)
}

func respCommand(args ...string) []byte {
	b := []byte("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b = append(b, "$"+strconv.Itoa(len(a))+"\r\n"+a+"\r\n"...)
	}
	return b
}

func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(line, "\r\n"), nil
}

// runRestore is "herald restore [flags] FILE": it prepares the empty data
// directory the flags (or config files, or environment) name from a
// backup, for the node they describe. Started with the same settings, the
// node serves the backup's state.
func runRestore(args []string, env func(string) string, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[len(args)-1], "-") {
		fmt.Fprint(stderr, `Usage: herald restore [flags] FILE

Creates a node's data directory from a backup made with herald backup. Give
the same flags, config files or environment as the node will run with: its
--data-dir (which must be empty), --node-id, --raft-addr, and --peers when
every member of a new cluster is restored from the same backup. Without
--peers the node starts alone; other nodes then join it with --join.
`)
		return 2
	}
	file := args[len(args)-1]
	cfg, err := parseConfig(args[:len(args)-1], env, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "herald restore:", err)
		return 2
	}
	f, err := os.Open(file)
	if err != nil {
		fmt.Fprintln(stderr, "herald restore:", err)
		return 1
	}
	defer f.Close()
	index, err := raftstore.Restore(raftstore.RestoreConfig{
		DataDir: cfg.dataDir, NodeID: cfg.nodeID, RaftAddr: cfg.raftAddr, Peers: cfg.peers,
	}, f)
	if err != nil {
		fmt.Fprintln(stderr, "herald restore:", err)
		return 1
	}
	fmt.Fprintf(stderr, "herald restore: %s restored into %s for node %s (log index %d); start the node with the same settings\n",
		file, cfg.dataDir, cfg.nodeID, index)
	return 0
}
