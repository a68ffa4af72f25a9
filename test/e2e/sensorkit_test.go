//go:build e2e

package e2e

// The kernel side of the sensor scenario: kubelet-style cgroups under a
// private root, real processes started inside them, counting listeners,
// and `bulkhead sensor` processes, each cleaned up even when a test fails.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
	"github.com/bulkhead-dev/bulkhead/test/framework/localcluster"
	"github.com/bulkhead-dev/bulkhead/test/framework/nodekit"
)

// kernelKit is the scenario's host side: a nodekit.Kit (private cgroup
// root, private bpffs, processes in kubelet-style cgroups, sensors), the
// programs built from testdata and the recorder in front of ingestion.
type kernelKit struct {
	*nodekit.Kit
	t *testing.T
	// bin holds the programs built from testdata.
	bin string
	rec *ingestRecorder
}

// newKernelKit skips, saying why, where the sensor cannot run (not root,
// no cgroup v2, no BTF); CI runs as root with BPF, so there it runs. Close
// (a cleanup) stops every process and removes every cgroup and mount even
// when the test fails.
func newKernelKit(t *testing.T) *kernelKit {
	t.Helper()
	if err := nodekit.Available(); err != nil {
		t.Skipf("the sensor scenario cannot run here: %v (CI runs it as root with BPF)", err)
	}
	dir := t.TempDir()
	// python3's CGI handler runs scripts as nobody: let it reach them.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	kit, err := nodekit.New(dir)
	if err != nil {
		t.Fatalf("nodekit: %v", err)
	}
	t.Cleanup(func() {
		if err := kit.Close(); err != nil {
			t.Errorf("cleaning up the host: %v", err)
		}
	})
	// A test that runs out of time panics without running cleanups: undo
	// the host's side shortly before, so no process, cgroup or mount stays.
	if d, ok := t.Deadline(); ok {
		early := time.AfterFunc(time.Until(d)-30*time.Second, func() {
			logf("the test's deadline is 30s away: stopping the processes and removing the cgroups and bpffs now")
			_ = kit.Close()
		})
		t.Cleanup(func() { early.Stop() })
	}
	k := &kernelKit{Kit: kit, t: t, bin: filepath.Join(dir, "bin")}
	start := time.Now()
	// The shop server is the demo's (one vulnerable server for both).
	for prog, pkg := range map[string]string{"shopserver": "../../hack/demo/shopserver", "netprobe": "./testdata/netprobe"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(k.bin, prog), pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	logf("built the shop server and testdata/netprobe in %s; cgroup root %s, bpffs %s", time.Since(start).Round(100*time.Millisecond), k.Root, k.PinDir)
	return k
}

// containerFor creates the pod's container cgroup.
func (k *kernelKit) containerFor(pod corev1.Pod) *nodekit.Container {
	k.t.Helper()
	c, err := k.Container(pod)
	if err != nil {
		k.t.Fatal(err)
	}
	logf("  pod %s (uid %s) on %s: cgroup %s", pod.Name, pod.UID, pod.Spec.NodeName, c.Rel)
	return c
}

// start runs a program inside the container's cgroup; the Kit stops it.
// A failed test shows the end of its output.
func (k *kernelKit) start(c *nodekit.Container, name, bin string, args ...string) *nodekit.Proc {
	k.t.Helper()
	p, err := c.Start(name, bin, args...)
	if err != nil {
		k.t.Fatalf("starting %s in pod %s: %v", name, c.Pod.Name, err)
	}
	k.t.Cleanup(func() {
		if k.t.Failed() {
			k.t.Logf("===== %s in pod %s (tail of %s)\n%s", name, c.Pod.Name, p.LogPath, p.Log(2048))
		}
	})
	return p
}

// counter is a listener counting what each pod sends (lines carry the
// pod's name as the second word): TCP lines, TCP connections or UDP
// datagrams.
type counter struct {
	addr string
	mu   sync.Mutex
	n    map[string]int
}

func (c *counter) add(name string) {
	c.mu.Lock()
	c.n[name]++
	c.mu.Unlock()
}

func (c *counter) get(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

// listenTCP counts lines (per sender name) on every connection it accepts;
// a connection counts as "connect <name>" lines too.
func listenTCP(t *testing.T, host string) *counter {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	c := &counter{addr: l.Addr().String(), n: map[string]int{}}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = conn.Close() }()
				sc := bufio.NewScanner(conn)
				for sc.Scan() {
					if f := strings.Fields(sc.Text()); len(f) >= 2 {
						c.add(f[1])
					}
				}
			}()
		}
	}()
	return c
}

func listenUDP(t *testing.T, host string) *counter {
	t.Helper()
	pc, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	c := &counter{addr: pc.LocalAddr().String(), n: map[string]int{}}
	t.Cleanup(func() { _ = pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if f := strings.Fields(string(buf[:n])); len(f) >= 2 {
				c.add(f[1])
			}
		}
	}()
	return c
}

// flowing waits up to d for name's count on c to grow.
func flowing(c *counter, name string, d time.Duration) error {
	before := c.get(name)
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if c.get(name) > before {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing from %s at %s for %s (total %d)", name, c.addr, d, before)
}

// silent requires name's count on c not to grow for d.
func silent(c *counter, name string, d time.Duration) error {
	before := c.get(name)
	time.Sleep(d)
	if after := c.get(name); after != before {
		return fmt.Errorf("%d more from %s at %s in %s", after-before, name, c.addr, d)
	}
	return nil
}

// startLoad requests pages from a server until the test ends.
func startLoad(t *testing.T, base string, paths ...string) *nodekit.Load {
	ld := nodekit.StartLoad(env.ctx, base, paths...)
	t.Cleanup(ld.Stop)
	return ld
}

// sensorProc is one `bulkhead sensor` process for one kwok node.
type sensorProc struct {
	*nodekit.Sensor
	node        string
	metricsAddr string
}

// metrics is the sensor's own bulkhead_sensor_* metrics, for a failure's dump.
func (p *sensorProc) metrics() string {
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + p.metricsAddr + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "bulkhead_sensor_") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// startSensor runs `bulkhead sensor` for node as a process under the
// sensor ServiceAccount (config/sensor, installed with config/default):
// its API token in a kubeconfig, its ingestion token audience-bound and
// bound to a pod of that account on node, as the DaemonSet's projected
// token is. It reports through the recorder.
func (k *kernelKit) startSensor(t *testing.T, node string, learning time.Duration) *sensorProc {
	t.Helper()
	ns := env.install.Namespace
	id, err := k.MintSensorIdentity(env.ctx, env.cluster.Config, ns, node)
	if err != nil {
		t.Fatalf("the sensor's identity on %s: %v", node, err)
	}
	ports := make([]int, 2)
	for i := range ports {
		if ports[i], err = localcluster.FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	o := nodekit.SensorOptions{
		Binary: os.Getenv("BULKHEAD_BIN"), Node: node, IngestURL: k.recorder(t).url,
		ManagerNamespace: ns, LearningWindow: learning, Identity: id,
		Health: fmt.Sprintf("127.0.0.1:%d", ports[0]), Metrics: fmt.Sprintf("127.0.0.1:%d", ports[1]),
	}
	if strings.HasPrefix(env.manager.Ingest.URL, "https://") {
		o.CAFile = ingestCA(t, filepath.Dir(id.TokenFile))
	}
	s, err := k.StartSensor(o)
	if err != nil {
		t.Fatalf("starting bulkhead sensor (BULKHEAD_BIN=%q): %v", o.Binary, err)
	}
	p := &sensorProc{Sensor: s, node: node, metricsAddr: o.Metrics}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("===== sensor on %s: metrics\n%s", node, p.metrics())
			t.Logf("===== sensor on %s (last 12 KiB of %s)\n%s", node, p.LogPath, p.Log(12<<10))
		}
	})
	logf("  bulkhead sensor for %s started (pid %d): %s", node, s.Cmd.Process.Pid, strings.Join(s.Args[1:], " "))
	return p
}

// ready waits for the sensor's /readyz (behaviour collection up).
func (p *sensorProc) ready(s *scenario, timeout time.Duration) {
	s.t.Helper()
	s.eventually(timeout, "sensor on "+p.node+" ready (/readyz)", p.Ready)
}

// ingestCA writes the manager's published ingest CA (ConfigMap
// bulkhead-ingest-ca, key ca.crt) to a file, as the DaemonSet mounts it.
func ingestCA(t *testing.T, dir string) string {
	t.Helper()
	var ca string
	err := poll(env.ctx, 30*time.Second, "ConfigMap bulkhead-ingest-ca published", func(ctx context.Context) error {
		cm, err := env.cluster.Kube.CoreV1().ConfigMaps(env.install.Namespace).Get(ctx, "bulkhead-ingest-ca", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ca = cm.Data["ca.crt"]; ca == "" {
			return errors.New("no ca.crt")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "ingest-ca.crt")
	if err := os.WriteFile(p, []byte(ca), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// hostAddr is a non-loopback IPv4 address of this host: EndpointSlices
// refuse loopback addresses, so the test's cluster DNS listens here.
func hostAddr() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}

// ingestRecorder sits between the sensors and the manager's ingestion and
// keeps every score the sensors sent (and the manager's answer), so a
// failure shows what reached the manager.
type ingestRecorder struct {
	url string
	mu  sync.Mutex
	log []string
	// last is the time of the newest accepted score per pod (the time of
	// the last event it scored, by the sensor's clock: this host's).
	last map[string]time.Time
}

// scoredSince reports whether the manager accepted a score of pod for
// events after t.
func (r *ingestRecorder) scoredSince(pod string, t time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last[pod].After(t)
}

func (k *kernelKit) recorder(t *testing.T) *ingestRecorder {
	if k.rec != nil {
		return k.rec
	}
	target, err := url.Parse(env.manager.Ingest.URL)
	if err != nil {
		t.Fatal(err)
	}
	r := &ingestRecorder{last: map[string]time.Time{}}
	proxy := httputil.NewSingleHostReverseProxy(target)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, 4<<20))
		req.Body = io.NopCloser(bytes.NewReader(body))
		var rep wire.Report
		_ = json.Unmarshal(body, &rep)
		rw := &statusWriter{ResponseWriter: w}
		proxy.ServeHTTP(rw, req)
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, sc := range rep.Scores {
			if rw.code/100 == 2 && sc.Time.After(r.last[sc.Pod]) {
				r.last[sc.Pod] = sc.Time
			}
			r.log = append(r.log, fmt.Sprintf("%s %s → %d: %s/%s score %.2f %q evidence %.400s", time.Now().UTC().Format("15:04:05.000"), rep.Node, rw.code, sc.Namespace, sc.Pod, sc.Score, sc.Reason, sc.Evidence))
		}
		for _, e := range rep.Enforcement {
			r.log = append(r.log, fmt.Sprintf("%s %s → %d: enforcement %s/%s enforced=%v connCut=%v method=%s reason=%q", time.Now().UTC().Format("15:04:05.000"), rep.Node, rw.code, e.Namespace, e.Pod, e.Enforced, e.ConnCut, e.Method, e.Reason))
		}
		if rw.code/100 != 2 {
			r.log = append(r.log, fmt.Sprintf("%s %s → %d (heartbeat)", time.Now().UTC().Format("15:04:05.000"), rep.Node, rw.code))
		}
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if t.Failed() {
			r.mu.Lock()
			t.Logf("===== what the sensors sent (scores, enforcement, refused requests)\n%s", strings.Join(r.log, "\n"))
			r.mu.Unlock()
		}
	})
	r.url = "http://" + l.Addr().String()
	k.rec = r
	return r
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}
