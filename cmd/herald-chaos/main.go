// Command herald-chaos is a Jepsen-style fault test of a three-node Herald
// cluster. It starts three real herald processes on loopback, each behind a
// fault-injecting proxy on its Raft address, publishes to every node over
// RESP and follows every channel from every node over RESP and WebSocket,
// while it kills, pauses, restarts and partitions the nodes on a schedule
// drawn from a seed. After healing, it reads every node's state and checks
// that nothing acknowledged was lost, nothing was duplicated or reordered,
// the nodes agree, and every subscriber saw every message exactly once in
// order. See docs/reliability.md.
//
//	herald-chaos --herald bin/herald --duration 2m [--seed N] [--json out.json]
//
// It exits 0 when the run found no anomaly, 1 when it did, 2 when the run
// could not be carried out.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(mainRun(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func mainRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("herald-chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var jsonPath, faults string
	fs.StringVar(&o.Herald, "herald", "bin/herald", "herald binary to run")
	fs.DurationVar(&o.Duration, "duration", 2*time.Minute, "how long to run the workload and faults")
	fs.Uint64Var(&o.Seed, "seed", 0, "seed for the fault schedule and workload (0: from the clock; printed)")
	fs.StringVar(&jsonPath, "json", "", "write the summary as JSON to this file")
	fs.StringVar(&o.Dir, "dir", "", "directory for the nodes' data and logs (default: a temporary one, removed unless anomalies are found)")
	fs.Float64Var(&o.Rate, "rate", 120, "publishes per second, over all publishers")
	fs.IntVar(&o.PublishersPerNode, "publishers", 2, "concurrent publishers per node")
	fs.IntVar(&o.Channels, "channels", 4, "channels")
	fs.StringVar(&faults, "faults", "", "comma-separated fault kinds (default all: "+strings.Join(allFaults, ",")+")")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if faults != "" {
		for _, f := range strings.Split(faults, ",") {
			if !known(f) {
				fmt.Fprintf(stderr, "herald-chaos: unknown fault %q; known: %s\n", f, strings.Join(allFaults, ","))
				return 2
			}
			o.Faults = append(o.Faults, f)
		}
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	fmt.Fprintf(stdout, "herald-chaos: seed %d (replay with --seed %d, make chaos SEED=%d)\n", o.Seed, o.Seed, o.Seed)
	sum, err := run(ctx, o)
	if err != nil {
		fmt.Fprintf(stderr, "herald-chaos: %v (seed %d)\n", err, o.Seed)
		return 2
	}
	sum.print(stdout)
	if jsonPath != "" {
		if err := sum.writeJSON(jsonPath); err != nil {
			fmt.Fprintln(stderr, "herald-chaos:", err)
			return 2
		}
	}
	if !sum.OK {
		return 1
	}
	return 0
}

func known(kind string) bool {
	for _, k := range allFaults {
		if k == kind {
			return true
		}
	}
	return false
}
