//go:build e2e

package e2e

// The kernel side of the sensor scenario: kubelet-style cgroups under a
// private root, real processes started inside them, counting listeners,
// and `bulkhead sensor` processes, each cleaned up even when a test fails.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/bulkhead-dev/bulkhead/internal/sensor/cgroups"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
	"github.com/bulkhead-dev/bulkhead/test/framework/localcluster"
)

// unifiedRoot is the cgroup v2 hierarchy; on these hybrid hosts it is
// mounted under /sys/fs/cgroup/unified.
func unifiedRoot() string {
	for _, p := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(p, "cgroup.controllers")); err == nil {
			return p
		}
	}
	return ""
}

// requireKernel skips, saying why, where the sensor cannot run: not root,
// no cgroup v2, no BPF. CI runs as root with BPF, so there it runs.
func requireKernel(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the sensor scenario needs root (cgroups, BPF); CI runs it as root")
	}
	if unifiedRoot() == "" {
		t.Skip("no cgroup v2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skip("kernel without BTF (/sys/kernel/btf/vmlinux): the sensor's CO-RE programs cannot load")
	}
}

// kernelKit owns what the scenario creates on the host.
type kernelKit struct {
	t *testing.T
	// root is the private cgroup root passed as --cgroup-root.
	root string
	// pinDir is a private bpffs mount for --bpf-pin-dir.
	pinDir string
	// bin holds the programs built from testdata.
	bin string
	dir string
	rec *ingestRecorder
	// kernelPins are what bpffs held when mounted.
	kernelPins map[string]bool
}

func newKernelKit(t *testing.T) *kernelKit {
	t.Helper()
	k := &kernelKit{t: t, dir: t.TempDir()}
	// python3's CGI handler runs scripts as nobody: let it reach them.
	for _, d := range []string{filepath.Dir(k.dir), k.dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	k.root = filepath.Join(unifiedRoot(), "bulkhead-e2e-"+randHex(4))
	if err := os.Mkdir(k.root, 0o755); err != nil {
		t.Fatalf("creating the private cgroup root: %v", err)
	}
	t.Cleanup(func() { removeCgroupTree(t, k.root) })
	k.pinDir = filepath.Join(k.dir, "bpffs")
	if err := os.Mkdir(k.pinDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("bpf", k.pinDir, "bpf", 0, "mode=0700"); err != nil {
		t.Skipf("cannot mount bpffs (%v): BPF unavailable", err)
	}
	// The kernel's own preloaded iterators (maps.debug, progs.debug) come
	// with every bpffs mount: not Bulkhead's.
	k.kernelPins = map[string]bool{}
	if entries, err := os.ReadDir(k.pinDir); err == nil {
		for _, e := range entries {
			k.kernelPins[filepath.Join(k.pinDir, e.Name())] = true
		}
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(k.pinDir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting bpffs %s: %v", k.pinDir, err)
		}
	})
	k.bin = filepath.Join(k.dir, "bin")
	start := time.Now()
	// The shop server is the demo's (one vulnerable server for both).
	for prog, pkg := range map[string]string{"shopserver": "../../hack/demo/shopserver", "netprobe": "./testdata/netprobe"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(k.bin, prog), pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	logf("built the shop server and testdata/netprobe in %s; cgroup root %s, bpffs %s", time.Since(start).Round(100*time.Millisecond), k.root, k.pinDir)
	return k
}

// removeCgroupTree kills every process below root (cgroup.kill) and
// removes the cgroups deepest first.
func removeCgroupTree(t *testing.T, root string) {
	if err := os.WriteFile(filepath.Join(root, "cgroup.kill"), []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("killing processes in %s: %v", root, err)
	}
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	deadline := time.Now().Add(10 * time.Second)
	for i := len(dirs) - 1; i >= 0; i-- {
		for {
			err := syscall.Rmdir(dirs[i])
			if err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("removing cgroup %s: %v", dirs[i], err)
				break
			}
			time.Sleep(100 * time.Millisecond) // killed processes still exiting
		}
	}
}

// container is one kwok pod's container: its cgroup at the kubelet's
// systemd/containerd path, under the private root.
type container struct {
	k    *kernelKit
	pod  corev1.Pod
	path string // absolute
	id   string
}

// containerFor creates the pod's container cgroup.
func (k *kernelKit) containerFor(pod corev1.Pod) *container {
	k.t.Helper()
	id := randHex(32)
	rel := cgroups.ContainerPath(cgroups.Systemd, "burstable", string(pod.UID), "containerd", id)
	c := &container{k: k, pod: pod, path: filepath.Join(k.root, rel), id: id}
	if err := os.MkdirAll(c.path, 0o755); err != nil {
		k.t.Fatalf("creating cgroup for pod %s: %v", pod.Name, err)
	}
	logf("  pod %s (uid %s) on %s: cgroup %s", pod.Name, pod.UID, pod.Spec.NodeName, rel)
	return c
}

// start runs a program inside the container's cgroup (CLONE_INTO_CGROUP,
// so it never runs outside it) and stops it at the end.
func (c *container) start(name, bin string, args ...string) *exec.Cmd {
	c.k.t.Helper()
	fd, err := syscall.Open(c.path, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		c.k.t.Fatal(err)
	}
	defer func() { _ = syscall.Close(fd) }()
	logPath := filepath.Join(c.k.dir, c.pod.Name+"-"+name+".log")
	out, err := os.Create(logPath)
	if err != nil {
		c.k.t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd, Setpgid: true}
	if err := cmd.Start(); err != nil {
		c.k.t.Fatalf("starting %s in pod %s: %v", name, c.pod.Name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c.k.t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		_ = out.Close()
		if c.k.t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 2048 {
				b = b[len(b)-2048:]
			}
			c.k.t.Logf("===== %s in pod %s (tail of %s)\n%s", name, c.pod.Name, logPath, b)
		}
	})
	return cmd
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

// load requests pages from a server until stopped, counting answers.
type load struct {
	mu       sync.Mutex
	ok, fail int
	lastErr  error
}

func startLoad(t *testing.T, base string, paths ...string) *load {
	ld := &load{}
	ctx, cancel := context.WithCancel(env.ctx)
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for i := 0; ctx.Err() == nil; i++ {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+paths[i%len(paths)], nil)
			resp, err := hc.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("GET %s: %s", req.URL, resp.Status)
				}
			}
			ld.mu.Lock()
			if err == nil {
				ld.ok++
			} else if ctx.Err() == nil {
				ld.fail++
				ld.lastErr = err
			}
			ld.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(40 * time.Millisecond):
			}
		}
	}()
	return ld
}

func (ld *load) stats() (ok, fail int, last error) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.ok, ld.fail, ld.lastErr
}

// sensorIdentity is the sensor's ServiceAccount, installed from
// config/sensor with config/default: the sensors run under its RBAC.
func sensorIdentity(t *testing.T) string {
	t.Helper()
	const sa = "bulkhead-sensor"
	if _, err := env.cluster.Kube.CoreV1().ServiceAccounts(env.install.Namespace).Get(env.ctx, sa, metav1.GetOptions{}); err != nil {
		t.Fatalf("the sensor's ServiceAccount from config/sensor: %v", err)
	}
	return sa
}

// sensorProc is one `bulkhead sensor` process for one kwok node.
type sensorProc struct {
	node    string
	cmd     *exec.Cmd
	logPath string
	health  string
	done    chan struct{}

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

// startSensor runs `bulkhead sensor` for node as a process: its API
// identity is the sensor ServiceAccount (a kubeconfig holding only that
// token), its ingestion token is audience-bound to bulkhead-ingest and
// bound to a pod of that ServiceAccount on node, as the DaemonSet's
// projected token is.
func (k *kernelKit) startSensor(t *testing.T, sa, node, learning string) *sensorProc {
	t.Helper()
	ns := env.install.Namespace
	kube := env.cluster.Kube.CoreV1()
	// The pod a DaemonSet would have made on node.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "bulkhead-sensor-e2e-" + node, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/component": "sensor"}},
		Spec: corev1.PodSpec{
			NodeName:                     node,
			ServiceAccountName:           sa,
			AutomountServiceAccountToken: ptr.To(false),
			Tolerations:                  []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			// Only an identity anchor for the bound token (nothing runs in
			// it), so it passes the namespace's restricted Pod Security.
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{Name: "sensor", Image: "bulkhead:e2e", SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}},
		},
	}
	created, err := kube.Pods(ns).Create(env.ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating the sensor's pod on %s: %v", node, err)
	}
	t.Cleanup(func() {
		_ = kube.Pods(ns).Delete(context.Background(), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	})
	ingest, err := kube.ServiceAccounts(ns).CreateToken(env.ctx, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         []string{"bulkhead-ingest"},
		ExpirationSeconds: ptr.To[int64](3600),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: created.Name, UID: created.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting the sensor's pod-bound ingest token: %v", err)
	}
	api, err := kube.ServiceAccounts(ns).CreateToken(env.ctx, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To[int64](3600),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: created.Name, UID: created.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting the sensor's API token: %v", err)
	}
	dir := filepath.Join(k.dir, "sensor-"+node)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "ingest-token")
	if err := os.WriteFile(tokenFile, []byte(ingest.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: env.cluster.Config.Host, CertificateAuthority: env.cluster.Config.CAFile}
	kc.AuthInfos["sensor"] = &clientcmdapi.AuthInfo{Token: api.Status.Token}
	kc.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "sensor"}
	kc.CurrentContext = "local"
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	ports := make([]int, 2)
	for i := range ports {
		if ports[i], err = localcluster.FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	p := &sensorProc{node: node, logPath: filepath.Join(dir, "sensor.log"), health: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		metricsAddr: fmt.Sprintf("127.0.0.1:%d", ports[1]), done: make(chan struct{})}
	args := []string{"sensor",
		"--node-name=" + node,
		"--cgroup-root=" + k.root,
		"--ingest-url=" + k.recorder(t).url,
		"--token-file=" + tokenFile,
		"--learning-window=" + learning,
		"--manager-namespace=" + ns,
		"--bpf-pin-dir=" + filepath.Join(k.pinDir, node),
		"--heartbeat-interval=5s",
		"--health-probe-bind-address=" + p.health,
		"--metrics-bind-address=" + p.metricsAddr,
	}
	if strings.HasPrefix(env.manager.Ingest.URL, "https://") {
		args = append(args, "--ca-file="+ingestCA(t, dir))
	}
	out, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(os.Getenv("BULKHEAD_BIN"), args...)
	p.cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting bulkhead sensor (BULKHEAD_BIN=%q): %v", os.Getenv("BULKHEAD_BIN"), err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		var metrics string
		if t.Failed() {
			metrics = p.metrics()
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		_ = out.Close()
		if t.Failed() {
			t.Logf("===== sensor on %s (last 12 KiB of %s)\n%s", node, p.logPath, tail(p.logPath, 12<<10))
			t.Logf("===== sensor on %s: metrics\n%s", node, metrics)
		}
	})
	logf("  bulkhead sensor for %s started (pid %d): %s", node, p.cmd.Process.Pid, strings.Join(args[1:], " "))
	return p
}

// ready waits for the sensor's /readyz (behaviour collection up).
func (p *sensorProc) ready(s *scenario, timeout time.Duration) {
	s.t.Helper()
	s.eventually(timeout, "sensor on "+p.node+" ready (/readyz)", func(ctx context.Context) error {
		select {
		case <-p.done:
			return fmt.Errorf("sensor exited: %v\n%s", p.cmd.ProcessState, tail(p.logPath, 4096))
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.health+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
		}
		return nil
	})
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

func tail(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer func() { _ = f.Close() }()
	if st, err := f.Stat(); err == nil && st.Size() > max {
		_, _ = f.Seek(st.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
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
}

func (k *kernelKit) recorder(t *testing.T) *ingestRecorder {
	if k.rec != nil {
		return k.rec
	}
	target, err := url.Parse(env.manager.Ingest.URL)
	if err != nil {
		t.Fatal(err)
	}
	r := &ingestRecorder{}
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
