package agenttest

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/sensor"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
)

// fakeCollector stands in for the eBPF collector: the test sends events and
// sets steady syscall activity per cgroup.
type fakeCollector struct {
	in chan sensor.Event

	mu      sync.Mutex
	tracked map[uint64]bool
	steady  map[uint64]map[sensor.Trigram]uint64
	// existing: what Sockets returns per cgroup.
	existing map[uint64][]sensor.Event
	duty     sensor.SyscallDuty
	closed   bool
}

func newFakeCollector() *fakeCollector {
	return &fakeCollector{in: make(chan sensor.Event, 64), tracked: map[uint64]bool{}, steady: map[uint64]map[sensor.Trigram]uint64{}}
}

func (f *fakeCollector) Track(id uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tracked[id] = true
	return nil
}

func (f *fakeCollector) Sockets(id uint64, _ string) ([]sensor.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.existing[id], nil
}

func (f *fakeCollector) Untrack(id uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.tracked, id)
	return nil
}

func (f *fakeCollector) isTracked(id uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tracked[id]
}

func (f *fakeCollector) Run(ctx context.Context, out chan<- sensor.Event) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-f.in:
			out <- ev
		}
	}
}

func (f *fakeCollector) setSyscalls(id uint64, grams map[sensor.Trigram]uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.steady[id] = grams
}

func (f *fakeCollector) DrainSyscalls() (map[uint64]map[sensor.Trigram]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[uint64]map[sensor.Trigram]uint64{}
	for id, g := range f.steady {
		if f.tracked[id] {
			out[id] = g
		}
	}
	return out, nil
}

func (f *fakeCollector) SyscallDuty() sensor.SyscallDuty {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.duty
}

func (f *fakeCollector) setDuty(d sensor.SyscallDuty) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.duty = d
}

func (f *fakeCollector) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

var sysNames = map[uint16]string{0: "read", 1: "write", 2: "open", 3: "close", 33: "dup2", 41: "socket", 42: "connect", 59: "execve", 101: "ptrace"}

func sysName(nr uint16) string { return sysNames[nr] }

// fakeContainers is the cgroup reader: containers the test placed, with CPU
// usage growing steadily.
type fakeContainers struct {
	mu    sync.Mutex
	conts []sensor.Container
	reads map[string]uint64
	walks int // PodCgroups calls
	scans int // Scan calls
}

func (f *fakeContainers) scanCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.scans
}

func (f *fakeContainers) walkCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.walks
}

func cgroupID(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return h.Sum64() | 1
}

// add places a container of pod uid; gen distinguishes a recreated cgroup.
func (f *fakeContainers) add(uid, container string, gen int) sensor.Container {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := sensor.Container{PodUID: uid, ContainerID: container, Runtime: "containerd", QoS: "burstable",
		Path: "kubepods.slice/kubepods-pod" + uid + ".slice/cri-containerd-" + container + ".scope"}
	c.ID = cgroupID(fmt.Sprintf("%s/%d", c.Path, gen))
	f.conts = slices.DeleteFunc(f.conts, func(o sensor.Container) bool { return o.Path == c.Path })
	f.conts = append(f.conts, c)
	return c
}

// addAt places a container of pod uid at a kubelet-style path rel.
func (f *fakeContainers) addAt(rel, uid string) sensor.Container {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := sensor.Container{PodUID: uid, ContainerID: filepath.Base(rel), Runtime: "containerd", QoS: "burstable", Path: rel, ID: cgroupID(rel)}
	f.conts = append(f.conts, c)
	return c
}

func (f *fakeContainers) Scan(string) ([]sensor.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scans++
	return slices.Clone(f.conts), nil
}

func podPath(uid string) string { return "kubepods.slice/kubepods-pod" + uid + ".slice" }

func (f *fakeContainers) PodCgroups(string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.walks++
	out := map[string]string{}
	for _, c := range f.conts {
		out[c.PodUID] = podPath(c.PodUID)
	}
	return out, nil
}

func (f *fakeContainers) ReadUsage(_, rel string) (sensor.Usage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reads == nil {
		f.reads = map[string]uint64{}
	}
	f.reads[rel] += 100
	return f.reads[rel], nil
}

func (f *fakeContainers) Rate(prev, cur sensor.Usage) detector.ResourceSample {
	return detector.ResourceSample{CPUMillicores: float64(cur.(uint64) - prev.(uint64)), MemoryBytes: 50 << 20}
}

// fakeEnforcer records what the agent asks of the kernel.
type fakeEnforcer struct {
	mu        sync.Mutex
	isolated  map[string]sensor.IsolateOptions
	calls     []string
	reconcile []map[string]sensor.IsolateOptions
	// gate, when set, holds every Attach until it is closed; delay
	// lengthens each Attach and Isolate; inflight and maxInflight count
	// the calls of each running at once.
	gate                  chan struct{}
	delay                 time.Duration
	inflight, maxInflight map[string]int
}

// enter counts a call of kind and waits as the test asked.
func (f *fakeEnforcer) enter(kind string) {
	f.mu.Lock()
	if f.inflight == nil {
		f.inflight, f.maxInflight = map[string]int{}, map[string]int{}
	}
	f.inflight[kind]++
	f.maxInflight[kind] = max(f.maxInflight[kind], f.inflight[kind])
	gate, delay := f.gate, f.delay
	f.mu.Unlock()
	if gate != nil && kind == "attach" {
		<-gate
	}
	time.Sleep(delay)
}

func (f *fakeEnforcer) leave(kind string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inflight[kind]--
}

func (f *fakeEnforcer) running(kind string) (now, most int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inflight[kind], f.maxInflight[kind]
}

func newFakeEnforcer() *fakeEnforcer {
	return &fakeEnforcer{isolated: map[string]sensor.IsolateOptions{}}
}

func (f *fakeEnforcer) Isolate(path string, o sensor.IsolateOptions) (sensor.IsolateResult, error) {
	f.enter("isolate")
	defer f.leave("isolate")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.isolated[path] = o
	f.calls = append(f.calls, "isolate "+path)
	return sensor.IsolateResult{CgroupID: cgroupID(path), Programs: []string{"cgroup_skb/ingress", "cgroup_skb/egress", "cgroup/connect4"},
		SocketsDestroyed: 1, ConnCut: true, Method: "bpf_sock_destroy"}, nil
}

func (f *fakeEnforcer) Attach(path string, _ sensor.IsolateOptions) (sensor.IsolateResult, error) {
	f.enter("attach")
	defer f.leave("attach")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "attach "+path)
	return sensor.IsolateResult{CgroupID: cgroupID(path)}, nil
}

func (f *fakeEnforcer) Release(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.isolated, path)
	f.calls = append(f.calls, "release "+path)
	return nil
}

func (f *fakeEnforcer) Reconcile(want map[string]sensor.IsolateOptions) ([]string, []string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reconcile = append(f.reconcile, want)
	return nil, nil, nil
}

func (f *fakeEnforcer) Close() error { return nil }

func (f *fakeEnforcer) state() (map[string]sensor.IsolateOptions, []string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := map[string]sensor.IsolateOptions{}
	for k, v := range f.isolated {
		m[k] = v
	}
	return m, slices.Clone(f.calls), len(f.reconcile)
}

// fakeManager stands in for the manager's /v1/sensor endpoint.
type fakeManager struct {
	*httptest.Server
	mu       sync.Mutex
	payloads []wire.Report
}

func newFakeManager(t *testing.T) *fakeManager {
	m := &fakeManager{}
	m.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p wire.Report
		if r.URL.Path != wire.Path || !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		m.mu.Lock()
		m.payloads = append(m.payloads, p)
		m.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(m.Close)
	return m
}

func (m *fakeManager) received() []wire.Report {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.payloads)
}

// senderConfig points a sensor at m with a token file and m's CA.
func (m *fakeManager) senderConfig(t *testing.T) sensor.SenderConfig {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("sensor-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	return sensor.SenderConfig{URL: m.URL, TokenFile: tok, CAFile: ca, HeartbeatInterval: 200 * 1e6, MinInterval: 10 * 1e6, BackoffBase: 50 * 1e6}
}
