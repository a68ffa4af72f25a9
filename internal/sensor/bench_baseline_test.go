package sensor

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/internal/behavior"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/cgroups"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/collect"
)

// BenchmarkBaselineBytes learns real servers' behaviour from the live
// collector and reports what each workload's baseline costs in the store
// (MarshalBinary, the bytes of its ConfigMap; budget 20 KiB). Each server
// (Debian's python3 -m http.server, openssl s_server -WWW) runs in its own
// cgroup under load from this process for BULKHEAD_BENCH_LEARN (default
// 10s), while the agent's path runs once a second: events converted by
// behaviorEvent, drained trigrams by syscallEvents, cgroup usage by
// cgroups.Rate, all learned by behavior.Observer. Needs root and kernel BTF.
// Run with -benchtime 1x (`make bench-sensor`).
func BenchmarkBaselineBytes(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: loads the BPF collector and creates cgroups")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		b.Skipf("needs kernel BTF: %v", err)
	}
	root := "/sys/fs/cgroup/unified"
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		root = "/sys/fs/cgroup"
		if err := unix.Statfs(root, &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
			b.Skip("needs a cgroup v2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup")
		}
	}
	learn := 10 * time.Second
	if d, err := time.ParseDuration(os.Getenv("BULKHEAD_BENCH_LEARN")); err == nil && d > 0 {
		learn = d
	}
	for _, bin := range []string{"/usr/bin/python3", "/usr/bin/openssl"} {
		if _, err := exec.LookPath(bin); err != nil {
			b.Skipf("needs %s (Debian's archive): %v", bin, err)
		}
	}
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte(strings.Repeat("bulkhead\n", 455)), 0o644); err != nil {
		b.Fatal(err)
	}
	certFile, keyFile := selfSignedCert(b, dir)

	type workload struct {
		name  string
		args  func(port int) []string
		https bool
		key   behavior.Key
		cg    string // relative to root
		t     target
		url   string
		reqs  atomic.Int64
	}
	workloads := []*workload{
		{name: "python-http-server", args: func(port int) []string {
			return []string{"/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", dir, fmt.Sprint(port)}
		}},
		{name: "openssl-s-server", https: true, args: func(port int) []string {
			return []string{"/usr/bin/openssl", "s_server", "-accept", fmt.Sprintf("127.0.0.1:%d", port), "-WWW", "-quiet", "-cert", certFile, "-key", keyFile}
		}},
	}

	for b.Loop() {
		c, err := collect.New(collect.Options{})
		if err != nil {
			b.Fatalf("collector: %v", err)
		}
		byID := map[uint64]*workload{}
		for _, w := range workloads {
			w.key = behavior.Key{Namespace: "bench", Owner: "Deployment/" + w.name, TemplateHash: "1"}
			w.t = target{Namespace: "bench", Pod: w.name + "-0", Container: "server"}
			w.cg = fmt.Sprintf("bulkhead-baseline-bench-%s-%d", w.name, os.Getpid())
			id := benchCgroup(b, filepath.Join(root, w.cg))
			if err := c.Track(id); err != nil {
				b.Fatal(err)
			}
			byID[id] = w
		}
		resolver := podResolver{}
		for _, w := range workloads {
			resolver[w.t.Namespace+"/"+w.t.Pod] = w.key
		}
		store := &captureStore{saved: map[behavior.Key]*behavior.Baseline{}}
		obs := behavior.NewObserver(behavior.Config{}, resolver, store)

		// The agent's event path: collector events converted as it does.
		ctx, cancel := context.WithCancel(context.Background())
		var (
			mu      sync.Mutex
			pending []detector.BehaviorEvent
			execs   = map[string]int{}
			conns   = map[string]int{}
			wg      sync.WaitGroup
		)
		events := make(chan collect.Event, 256)
		wg.Go(func() { _ = c.Run(ctx, events) })
		wg.Go(func() {
			for {
				select {
				case ev := <-events:
					w := byID[ev.CgroupID]
					if w == nil {
						continue
					}
					if be, ok := behaviorEvent(w.t, agentEvent(ev)); ok {
						mu.Lock()
						pending = append(pending, be)
						if ev.Exec != nil {
							execs[w.name]++
						} else {
							conns[w.name]++
						}
						mu.Unlock()
					}
				case <-ctx.Done():
					return
				}
			}
		})

		for _, w := range workloads {
			port := freePort(b)
			argv := w.args(port)
			f, err := os.Open(filepath.Join(root, w.cg))
			if err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Dir = dir
			cmd.SysProcAttr = &unix.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			f.Close()
			b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			scheme := "http"
			if w.https {
				scheme = "https"
			}
			w.url = fmt.Sprintf("%s://127.0.0.1:%d/index.html", scheme, port)
			waitListening(b, port)
		}

		// Load: new connections per request (both servers speak HTTP/1.0),
		// two clients per server, from this process (outside the cgroups).
		loadCtx, stopLoad := context.WithTimeout(ctx, learn)
		var loadErr atomic.Value
		for _, w := range workloads {
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
				DisableKeepAlives: true,
				TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // the test's own self-signed server
			}}
			for range 2 {
				wg.Go(func() {
					for loadCtx.Err() == nil {
						resp, err := client.Get(w.url)
						if err != nil {
							if loadCtx.Err() == nil {
								loadErr.Store(fmt.Errorf("%s: %w", w.name, err))
							}
							return
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						_ = resp.Body.Close()
						w.reqs.Add(1)
					}
				})
			}
		}

		// The agent's sample and observe, once a second.
		usage := map[string]cgroups.Usage{}
		distinct := map[string]map[Trigram]bool{}
		sample := func() {
			now := time.Now()
			grams, err := c.DrainSyscalls()
			if err != nil {
				b.Fatal(err)
			}
			var evs []detector.BehaviorEvent
			for id, counts := range grams {
				w := byID[id]
				m := make(map[Trigram]uint64, len(counts))
				for g, n := range counts {
					m[Trigram(g)] = n
					if distinct[w.name] == nil {
						distinct[w.name] = map[Trigram]bool{}
					}
					distinct[w.name][Trigram(g)] = true
				}
				evs = append(evs, syscallEvents(w.t, m, collect.SyscallName, now)...)
			}
			for _, w := range workloads {
				u, err := cgroups.ReadUsage(root, w.cg)
				if err != nil {
					b.Fatal(err)
				}
				if prev, ok := usage[w.name]; ok {
					s := cgroups.Rate(prev, u)
					evs = append(evs, detector.BehaviorEvent{Namespace: w.t.Namespace, Pod: w.t.Pod, Container: w.t.Container, Time: now, Metrics: &s})
				}
				usage[w.name] = u
			}
			mu.Lock()
			evs = append(pending, evs...)
			pending = nil
			mu.Unlock()
			if _, err := obs.ObserveBehavior(ctx, evs); err != nil {
				b.Fatal(err)
			}
		}
		tick := time.NewTicker(time.Second)
		for loadCtx.Err() == nil {
			select {
			case <-tick.C:
				sample()
			case <-loadCtx.Done():
			}
		}
		tick.Stop()
		stopLoad()
		sample()
		cancel()
		wg.Wait()
		if err := c.Close(); err != nil {
			b.Fatal(err)
		}
		if err, _ := loadErr.Load().(error); err != nil {
			b.Fatalf("load: %v", err)
		}
		if err := obs.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}

		b.Logf("baselines learned from the live collector over %v (agent path: events, trigram drains and cgroup usage every 1s):", learn)
		for _, w := range workloads {
			bl := store.saved[w.key]
			if bl == nil {
				b.Fatalf("%s: no baseline saved", w.name)
			}
			data, err := bl.MarshalBinary()
			if err != nil {
				b.Fatal(err)
			}
			if w.reqs.Load() == 0 || len(distinct[w.name]) == 0 {
				b.Fatalf("%s: %d requests served, %d distinct trigrams: nothing was learned", w.name, w.reqs.Load(), len(distinct[w.name]))
			}
			b.ReportMetric(float64(len(data)), w.name+"-baseline-B")
			b.Logf("  %-20s %6d B stored (budget %d); %d requests, %d events learned, %d distinct trigrams, %d execs, %d connection events",
				w.name, len(data), behavior.MaxStoredBytes, w.reqs.Load(), bl.Events, len(distinct[w.name]), execs[w.name], conns[w.name])
		}
	}
}

// agentEvent converts a collector event as the sensor's backend does
// (cmd/sensor_backends.go).
func agentEvent(ev collect.Event) Event {
	se := Event{CgroupID: ev.CgroupID, Time: ev.Time}
	if x := ev.Exec; x != nil {
		parent := x.ParentExe
		if parent == "" {
			parent = x.Parent
		}
		se.Exec = &Exec{PID: x.PID, PPID: x.PPID, UID: x.UID, Binary: x.Binary, Parent: parent, Args: x.Args}
	}
	if x := ev.Conn; x != nil {
		conn := Conn(*x)
		se.Conn = &conn
	}
	return se
}

// captureStore keeps what the observer saves.
type captureStore struct {
	mu    sync.Mutex
	saved map[behavior.Key]*behavior.Baseline
}

func (s *captureStore) Load(context.Context, string, string) ([]*behavior.Baseline, error) {
	return nil, nil
}

func (s *captureStore) Save(_ context.Context, bl *behavior.Baseline) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saved[bl.Key] = bl
	return nil
}

// benchCgroup creates a cgroup and returns its id; cleanup kills what is in
// it and removes it.
func benchCgroup(b *testing.B, path string) uint64 {
	if err := os.Mkdir(path, 0o755); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			err := unix.Rmdir(path)
			if err == nil || err == unix.ENOENT {
				return
			}
			if time.Now().After(deadline) {
				b.Errorf("remove cgroup %s: %v", path, err)
				return
			}
		}
	})
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		b.Fatal(err)
	}
	return st.Ino
}

func freePort(b *testing.B) int {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitListening(b *testing.B, port int) {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return
		}
	}
	b.Fatalf("nothing listens on port %d after 20s", port)
}

// selfSignedCert has openssl write a throwaway certificate and key for
// openssl s_server.
func selfSignedCert(b *testing.B, dir string) (certFile, keyFile string) {
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	out, err := exec.Command("/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
		"-nodes", "-subj", "/CN=127.0.0.1", "-days", "1", "-keyout", keyFile, "-out", certFile).CombinedOutput()
	if err != nil {
		b.Fatalf("openssl req: %v: %s", err, out)
	}
	return certFile, keyFile
}
