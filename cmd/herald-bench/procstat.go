package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is Linux's USER_HZ, the unit of /proc/<pid>/stat times; it is
// 100 on every architecture Go supports.
const clockTicks = 100

// cpuTicks returns a process's user+system CPU time in clock ticks.
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'. utime and stime are fields 14 and 15, the 12th and 13th
	// after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return u + s, nil
}

// rssKB returns a process's resident set size in KiB.
func rssKB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// ProcStats is what a set of processes used during a run.
type ProcStats struct {
	PIDs []int `json:"pids"`
	// CPUSeconds is user+system time over the run; CPUPercent the same
	// per second of the run (100 = one core busy; this machine has
	// Cores of them).
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUPercent float64 `json:"cpu_percent"`
	// RSS in KiB, summed over the processes: at the start, at the end and
	// the highest sample (every 250 ms).
	RSSStartKB int64 `json:"rss_start_kb"`
	RSSEndKB   int64 `json:"rss_end_kb"`
	RSSMaxKB   int64 `json:"rss_max_kb"`
	// DiskWait is the average number of the processes' threads found in
	// uninterruptible sleep (state D: waiting for the disk, usually fsync)
	// when sampled every 250 ms.
	DiskWait float64 `json:"disk_wait_threads"`
	// Exited lists the processes that ended during the run.
	Exited []int `json:"exited,omitempty"`
}

// procSampler measures CPU and RSS of a set of processes over a run. A
// process that exits keeps the CPU time last read, and is reported.
type procSampler struct {
	pids    []int
	t0      time.Time
	ticks0  uint64
	rss0    int64
	mu      sync.Mutex
	last    map[int]uint64 // ticks last read, by pid
	gone    map[int]bool
	rssMax  int64
	dWait   int // threads in state D, summed over samples
	samples int
	lastT   time.Time
	lastSum uint64
	stop    chan struct{}
	stopped chan struct{}
}

// ticks returns the processes' CPU time, remembering each one's last
// reading so that one that exits does not make the total go backwards.
func (s *procSampler) ticks() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var t uint64
	for _, p := range s.pids {
		if v, err := cpuTicks(p); err == nil && !s.gone[p] {
			s.last[p] = v
		} else {
			s.gone[p] = true
		}
		t += s.last[p]
	}
	return t
}

func sumRSS(pids []int) int64 {
	var t int64
	for _, p := range pids {
		v, _ := rssKB(p)
		t += v
	}
	return t
}

// startSampler starts measuring pids (none: a sampler that reports zeros).
func startSampler(pids []int) *procSampler {
	s := &procSampler{pids: pids, t0: time.Now(), last: map[int]uint64{}, gone: map[int]bool{},
		stop: make(chan struct{}), stopped: make(chan struct{})}
	s.ticks0 = s.ticks()
	s.rss0 = sumRSS(pids)
	s.rssMax = s.rss0
	s.lastT, s.lastSum = s.t0, s.ticks0
	go func() {
		defer close(s.stopped)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				r, d := sumRSS(pids), threadsInDiskWait(pids)
				s.mu.Lock()
				s.rssMax = max(s.rssMax, r)
				s.dWait += d
				s.samples++
				s.mu.Unlock()
			}
		}
	}()
	return s
}

// interval returns the CPU percentage since the previous call (or the
// start), and the current RSS, for progress lines.
func (s *procSampler) interval() (cpuPercent float64, rss int64) {
	now, ticks := time.Now(), s.ticks()
	s.mu.Lock()
	defer s.mu.Unlock()
	if dt := now.Sub(s.lastT).Seconds(); dt > 0 {
		cpuPercent = float64(ticks-s.lastSum) / clockTicks / dt * 100
	}
	s.lastT, s.lastSum = now, ticks
	return cpuPercent, sumRSS(s.pids)
}

// finish stops sampling and returns the totals.
func (s *procSampler) finish() ProcStats {
	close(s.stop)
	<-s.stopped
	ticks, rss := s.ticks(), sumRSS(s.pids)
	el := time.Since(s.t0).Seconds()
	st := ProcStats{PIDs: s.pids, RSSStartKB: s.rss0, RSSEndKB: rss, RSSMaxKB: max(s.rssMax, rss)}
	st.CPUSeconds = float64(ticks-s.ticks0) / clockTicks
	if el > 0 {
		st.CPUPercent = st.CPUSeconds / el * 100
	}
	for _, p := range s.pids {
		if s.gone[p] {
			st.Exited = append(st.Exited, p)
		}
	}
	if s.samples > 0 {
		st.DiskWait = float64(s.dWait) / float64(s.samples)
	}
	return st
}

// threadsInDiskWait counts the processes' threads in state D.
func threadsInDiskWait(pids []int) int {
	n := 0
	for _, p := range pids {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", p))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'D' {
				n++
			}
		}
	}
	return n
}

// pidListening returns the process listening on a loopback TCP port, found
// through /proc/net/tcp{,6} and the processes' socket descriptors, or 0.
// It lets the tool measure a server it did not start (a redis-server
// started by hand) without being told its pid.
func pidListening(port int) int {
	inodes := map[string]bool{}
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(f[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 32); !ok || err != nil || int(p) != port {
				continue
			}
			inodes["socket:["+f[9]+"]"] = true
		}
	}
	if len(inodes) == 0 {
		return 0
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range procs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil || pid == os.Getpid() {
			continue
		}
		fds, _ := os.ReadDir(dir + "/fd")
		for _, fd := range fds {
			if target, err := os.Readlink(dir + "/fd/" + fd.Name()); err == nil && inodes[target] {
				return pid
			}
		}
	}
	return 0
}

// raiseFileLimit raises the soft limit on open files to the hard limit, and
// returns it. Child processes (servers the suite starts, workers) inherit
// it: the Go runtime raises its own soft limit at startup but gives
// children the original one back unless the program sets the limit itself,
// so this sets it even when it is already raised.
func raiseFileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	lim.Cur = lim.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Cur
}

// cpuTimes is the machine's CPU time from /proc/stat, in clock ticks.
type cpuTimes struct{ busy, total, steal, iowait, irq uint64 }

func readCPUTimes() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}
	}
	var t cpuTimes
	// user nice system idle iowait irq softirq steal [guest guest_nice]:
	// guest time is already counted in user time.
	for i, s := range f[1:9] {
		v, _ := strconv.ParseUint(s, 10, 64)
		t.total += v
		switch i {
		case 3: // idle
		case 4:
			t.iowait += v
		case 5, 6:
			t.irq += v
			t.busy += v
		case 7:
			t.steal += v
			t.busy += v
		default:
			t.busy += v
		}
	}
	return t
}

// procSnapshot is the CPU time of every process on the machine.
type procSnapshot map[int]procTicks

type procTicks struct {
	comm   string
	ticks  uint64
	kernel bool // a kernel thread (kworker, ksoftirqd, jbd2: work done for any process)
}

func snapshotProcs() procSnapshot {
	snap := procSnapshot{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		b, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue
		}
		i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if i < 0 || j < i {
			continue
		}
		f := strings.Fields(string(b[j+1:]))
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		ppid, _ := strconv.Atoi(f[1])
		snap[pid] = procTicks{comm: string(b[i+1 : j]), ticks: u + st, kernel: pid == 2 || ppid == 2}
	}
	return snap
}

// MachineStats is the whole machine's CPU over a run, in percent of one
// core (100 × cores = every core busy).
type MachineStats struct {
	Cores       int     `json:"cores"`
	BusyPercent float64 `json:"busy_percent"`
	// OtherPercent is what processes other than the servers and this tool
	// used, including processes that started and ended during the run
	// (estimated from what is left of the machine's busy time). Much of it
	// means the run's numbers are not to be trusted; Others names the
	// largest.
	OtherPercent float64 `json:"other_percent"`
	Others       string  `json:"others,omitempty"`
	// KernelPercent is what kernel threads used (ksoftirqd, kworker,
	// jbd2): work the kernel did for the servers and the tool (loopback
	// networking, the filesystem journal) without charging it to them.
	KernelPercent float64 `json:"kernel_percent"`
	Kernel        string  `json:"kernel,omitempty"`
	StealPercent  float64 `json:"steal_percent"`
	// IRQPercent is interrupt and softirq time, charged to no process:
	// mostly loopback networking, for the servers and the tool.
	IRQPercent float64 `json:"irq_percent"`
	// IOWaitPercent is idle time with disk I/O outstanding: a server
	// waiting for fsync shows here, not as CPU.
	IOWaitPercent float64 `json:"iowait_percent"`
}

// topNames returns the three largest users, "name 12%, ...".
func topNames(m map[string]float64) string {
	type kv struct {
		k string
		v float64
	}
	var top []kv
	for k, v := range m {
		top = append(top, kv{k, v})
	}
	sort.Slice(top, func(i, j int) bool { return top[i].v > top[j].v })
	var names []string
	for _, t := range top[:min(3, len(top))] {
		if t.v >= 1 {
			names = append(names, fmt.Sprintf("%s %.0f%%", t.k, t.v))
		}
	}
	return strings.Join(names, ", ")
}

// machineSampler measures the machine over a run.
type machineSampler struct {
	t0    cpuTimes
	p0    procSnapshot
	start time.Time
}

func startMachineSampler() *machineSampler {
	return &machineSampler{t0: readCPUTimes(), p0: snapshotProcs(), start: time.Now()}
}

// finish returns the machine's use since the start. exclude are the
// processes measured on their own (servers, this tool and its workers).
func (m *machineSampler) finish(exclude []int) MachineStats {
	t1, p1 := readCPUTimes(), snapshotProcs()
	ms := MachineStats{Cores: runtime.NumCPU()}
	dt := t1.total - m.t0.total
	if dt == 0 {
		return ms
	}
	// /proc/stat counts ticks of every CPU; percent of one core.
	scale := float64(ms.Cores) * 100 / float64(dt)
	ms.BusyPercent = float64(t1.busy-m.t0.busy) * scale
	ms.StealPercent = float64(t1.steal-m.t0.steal) * scale
	ms.IOWaitPercent = float64(t1.iowait-m.t0.iowait) * scale
	ms.IRQPercent = float64(t1.irq-m.t0.irq) * scale
	skip := map[int]bool{}
	for _, p := range exclude {
		skip[p] = true
	}
	wall := time.Since(m.start).Seconds()
	byComm, byKThread := map[string]float64{}, map[string]float64{}
	var excluded, named float64
	for pid, p := range p1 {
		// A process started since counts whole. (Names are not compared:
		// a kworker's changes with the work it runs.)
		d := p.ticks
		if p0, ok := m.p0[pid]; ok && p.ticks >= p0.ticks {
			d = p.ticks - p0.ticks
		}
		if d == 0 {
			continue
		}
		pct := float64(d) / clockTicks / wall * 100
		if skip[pid] {
			excluded += pct
			continue
		}
		if p.kernel {
			ms.KernelPercent += pct
			// kworker/1:2H-kblockd: the name up to the CPU number.
			name, _, _ := strings.Cut(p.comm, "/")
			byKThread[name] += pct
			continue
		}
		named += pct
		byComm[p.comm] += pct
	}
	// What no running process accounts for, beyond interrupts, was used by
	// processes that started and ended within the run (a build's compiler
	// and linker runs, test binaries). Tick sampling makes a few percent of
	// noise either way.
	if short := ms.BusyPercent - excluded - ms.KernelPercent - named - ms.IRQPercent; short >= 5 {
		byComm["short-lived processes"] = short
		named += short
	}
	ms.OtherPercent = named
	ms.Others, ms.Kernel = topNames(byComm), topNames(byKThread)
	return ms
}

// waitQuiet waits, up to limit, until processes other than exclude use
// less than maxPercent (of one core) over a second, and returns what they
// used in the last second and who. A benchmark beside a compiler or a test
// suite measures the neighbour.
func waitQuiet(limit time.Duration, maxPercent float64, exclude []int, log func(string, ...any)) (float64, string) {
	deadline := time.Now().Add(limit)
	warned := false
	for {
		m := startMachineSampler()
		time.Sleep(time.Second)
		st := m.finish(exclude)
		if st.OtherPercent < maxPercent || time.Now().After(deadline) {
			return st.OtherPercent, st.Others
		}
		if !warned {
			log("machine busy: other processes use %.0f%% of a core (%s); waiting up to %s for them", st.OtherPercent, st.Others, time.Until(deadline).Round(time.Second))
			warned = true
		}
	}
}
