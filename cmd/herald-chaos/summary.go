package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// summary is a run's result, printed and written as JSON.
type summary struct {
	Seed        uint64         `json:"seed"`
	Duration    string         `json:"duration"`
	Elapsed     string         `json:"elapsed"`
	Dir         string         `json:"dir,omitempty"`
	Nodes       int            `json:"nodes"`
	Channels    int            `json:"channels"`
	Publishes   publishCounts  `json:"publishes"`
	Messages    int            `json:"messages_in_history"`
	Faults      map[string]int `json:"faults"`
	FaultsTotal int            `json:"faults_total"`
	FaultLog    []faultRecord  `json:"fault_log"`
	Subscribers []subSummary   `json:"subscribers"`
	Anomalies   []anomaly      `json:"anomalies"`
	ByKind      map[string]int `json:"anomalies_by_kind"`
	OK          bool           `json:"ok"`
}

// publishCounts counts publishes by outcome.
type publishCounts struct {
	Total         int `json:"total"`
	Acknowledged  int `json:"acknowledged"`
	Failed        int `json:"failed"`
	Indeterminate int `json:"indeterminate"`
	// IndeterminateCommitted is how many indeterminate publishes turned
	// out to be in the history (once: more would be an anomaly).
	IndeterminateCommitted int `json:"indeterminate_committed"`
}

// subSummary is one subscriber's part of the summary.
type subSummary struct {
	Name        string       `json:"name"`
	Connects    int          `json:"connects"`
	Received    int          `json:"received"`
	Unrecovered []resumeNote `json:"unrecovered_resumes,omitempty"`
}

func summarize(o options, dir string, elapsed time.Duration, obs observation, faults []faultRecord, subs []*subscriber, rep *report) *summary {
	s := &summary{Seed: o.Seed, Duration: o.Duration.String(), Elapsed: elapsed.Round(time.Second).String(), Dir: dir,
		Nodes: len(obs.Nodes), Channels: len(obs.Channels), Faults: make(map[string]int), FaultLog: faults,
		Anomalies: rep.list, ByKind: rep.counts}
	if s.Anomalies == nil {
		s.Anomalies = []anomaly{}
	}
	inHistory := make(map[string]bool)
	if len(obs.Nodes) > 0 {
		for ch, cs := range obs.Nodes[0] {
			s.Messages += len(cs.Messages)
			for _, m := range cs.Messages {
				inHistory[ch+"\x00"+m.Payload] = true
			}
		}
	}
	for _, op := range obs.Ops {
		s.Publishes.Total++
		switch op.Outcome {
		case outcomeOK:
			s.Publishes.Acknowledged++
		case outcomeFail:
			s.Publishes.Failed++
		default:
			s.Publishes.Indeterminate++
			if inHistory[op.Channel+"\x00"+op.Payload] {
				s.Publishes.IndeterminateCommitted++
			}
		}
	}
	for _, f := range faults {
		s.Faults[f.Kind]++
		s.FaultsTotal++
	}
	for _, sub := range subs {
		sub.mu.Lock()
		ss := subSummary{Name: sub.name, Connects: sub.connects, Unrecovered: sub.unrecovered}
		for _, ds := range sub.got {
			ss.Received += len(ds)
		}
		sub.mu.Unlock()
		s.Subscribers = append(s.Subscribers, ss)
	}
	s.OK = len(rep.list) == 0
	return s
}

// print writes the summary for people.
func (s *summary) print(w io.Writer) {
	fmt.Fprintf(w, "herald-chaos: seed %d, %s (%s elapsed), %d nodes, %d channels\n", s.Seed, s.Duration, s.Elapsed, s.Nodes, s.Channels)
	p := s.Publishes
	fmt.Fprintf(w, "publishes: %d: %d acknowledged, %d failed (CLUSTERDOWN), %d indeterminate (%d of them committed)\n",
		p.Total, p.Acknowledged, p.Failed, p.Indeterminate, p.IndeterminateCommitted)
	fmt.Fprintf(w, "history: %d messages on every node\n", s.Messages)
	var kinds []string
	for k := range s.Faults {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var parts []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %d", k, s.Faults[k]))
	}
	fmt.Fprintf(w, "faults: %d: %s\n", s.FaultsTotal, strings.Join(parts, ", "))
	for _, sub := range s.Subscribers {
		fmt.Fprintf(w, "subscriber %s: %d messages, %d connections, %d unrecovered resumes\n", sub.Name, sub.Received, sub.Connects, len(sub.Unrecovered))
	}
	if s.OK {
		fmt.Fprintln(w, "anomalies: none")
		return
	}
	total := 0
	for _, n := range s.ByKind {
		total += n
	}
	fmt.Fprintf(w, "anomalies: %d\n", total)
	for _, a := range s.Anomalies {
		fmt.Fprintf(w, "  %s %s %s: %s\n", a.Kind, a.Channel, a.Node, a.Detail)
	}
	if s.Dir != "" {
		fmt.Fprintf(w, "data and node logs kept in %s\n", s.Dir)
	}
}

// writeJSON writes the summary to path.
func (s *summary) writeJSON(path string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode summary: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}
