// Package kit is the harness the chaos, flood and bench suites share: a local
// control plane (internal/localcluster) with Bulkhead installed from config/,
// manager processes this package starts itself (so it can SIGKILL and restart
// them, or run two with leader election), an API-server restart, fast
// creation of ReplicaSets with their pods, and score posting.
package kit

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/bulkhead-dev/bulkhead/internal/localcluster"
)

// Detector is the external detector name the suites post scores for.
const Detector = "load-model"

// Env is a running cluster with Bulkhead installed.
type Env struct {
	Ctx     context.Context
	Cluster *localcluster.Cluster
	Install *localcluster.Install
	// Fast is an admin clientset with a high QPS for setting up load.
	Fast  kubernetes.Interface
	Token string
	Creds string
	Logf  func(format string, args ...any)
	// ManagerEnv is added to the environment of managers started after.
	ManagerEnv []string

	mu        sync.Mutex
	apiserver *exec.Cmd
	apiDone   chan struct{}
}

// Start boots a cluster with nodes kwok nodes and installs Bulkhead.
func Start(ctx context.Context, nodes int, logf func(string, ...any)) (*Env, error) {
	c, err := localcluster.Start(ctx, localcluster.Options{Nodes: nodes, Logf: logf})
	if err != nil {
		return nil, err
	}
	e := &Env{Ctx: ctx, Cluster: c, Logf: logf}
	inst, err := c.InstallBulkhead(ctx, RepoRoot())
	if err != nil {
		e.Stop()
		return nil, err
	}
	e.Install = inst
	cfg := rest.CopyConfig(c.Config)
	cfg.QPS, cfg.Burst = 2000, 4000
	if e.Fast, err = kubernetes.NewForConfig(cfg); err != nil {
		e.Stop()
		return nil, err
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	e.Token = hex.EncodeToString(tok)
	e.Creds = filepath.Join(c.Dir, "ingest-tokens")
	if err := os.WriteFile(e.Creds, []byte(e.Token+" name=load detectors="+Detector+",falco\n"), 0o600); err != nil {
		e.Stop()
		return nil, err
	}
	return e, nil
}

// Stop stops a restarted API server (if any) and the cluster.
func (e *Env) Stop() {
	e.mu.Lock()
	api := e.apiserver
	e.mu.Unlock()
	if api != nil && api.Process != nil {
		_ = syscall.Kill(-api.Process.Pid, syscall.SIGTERM)
		select {
		case <-e.apiDone:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-api.Process.Pid, syscall.SIGKILL)
		}
	}
	e.Cluster.Stop()
}

// RepoRoot is the repository checkout.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// Manager is one bulkhead manager process started by this package.
type Manager struct {
	Name      string
	Args      []string
	IngestURL string
	LogPath   string
	Probe     string
	cmd       *exec.Cmd
	done      chan struct{}
	err       error
	env       []string
}

// StartManager starts a manager under the installed ServiceAccount's token
// with the Deployment's arguments, extra replacing flags of the same name.
func (e *Env) StartManager(name string, extra ...string) (*Manager, error) {
	c := e.Cluster
	tr, err := c.Kube.CoreV1().ServiceAccounts(e.Install.Namespace).CreateToken(e.Ctx, e.Install.ServiceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](24 * 3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token for the manager: %w", err)
	}
	user := "system:serviceaccount:" + e.Install.Namespace + ":" + e.Install.ServiceAccount
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: c.Config.Host, CertificateAuthority: c.Config.CAFile}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: user, Namespace: e.Install.Namespace}
	cfg.CurrentContext = "local"
	kc := filepath.Join(c.Dir, name+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, kc); err != nil {
		return nil, err
	}
	ports := make([]int, 2)
	for i := range ports {
		if ports[i], err = localcluster.FreePort(); err != nil {
			return nil, err
		}
	}
	m := &Manager{Name: name, LogPath: filepath.Join(c.Dir, name+".log"), env: append([]string{"KUBECONFIG=" + kc}, e.ManagerEnv...),
		Probe: "127.0.0.1:" + strconv.Itoa(ports[0]), IngestURL: "http://127.0.0.1:" + strconv.Itoa(ports[1])}
	extra = append([]string{
		"--health-probe-bind-address=" + m.Probe,
		"--metrics-bind-address=0",
		"--ingest-bind-address=127.0.0.1:" + strconv.Itoa(ports[1]),
		"--ingest-insecure",
		"--ingest-token-file=" + e.Creds,
	}, extra...)
	over := map[string]bool{}
	for _, a := range extra {
		n, _, _ := strings.Cut(a, "=")
		over[n] = true
	}
	for _, a := range e.Install.ManagerArgs {
		if n, _, _ := strings.Cut(a, "="); !over[n] {
			m.Args = append(m.Args, a)
		}
	}
	m.Args = append(m.Args, extra...)
	return m, m.Start(e.Ctx)
}

// Binary is the manager binary (make build).
func Binary() string {
	if b := os.Getenv("BULKHEAD_BIN"); b != "" {
		return b
	}
	return filepath.Join(RepoRoot(), "bin", "bulkhead")
}

// Restart starts the process again like a kubelet would: a start that
// exits before ready (a port still held by the killed process, a failed
// leader-election or cache start) is retried with a growing delay, for up
// to timeout.
func (m *Manager) Restart(ctx context.Context, timeout time.Duration) (attempts int, err error) {
	deadline := time.Now().Add(timeout)
	delay := 500 * time.Millisecond
	for {
		attempts++
		if err = m.Start(ctx); err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return attempts, err
		}
		time.Sleep(delay)
		delay = min(2*delay, 5*time.Second)
	}
}

// Start (re)starts the process, appending to its log, and waits for /readyz.
func (m *Manager) Start(ctx context.Context) error {
	f, err := os.OpenFile(m.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "\n==== kit: start %s ====\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(Binary(), m.Args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), m.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return err
	}
	m.cmd, m.done, m.err = cmd, make(chan struct{}), nil
	done := m.done
	go func() {
		err := cmd.Wait()
		_ = f.Close()
		m.err = err
		close(done)
	}()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("manager %s exited before ready: %v; log %s", m.Name, m.err, m.LogPath)
		default:
		}
		resp, err := http.Get("http://" + m.Probe + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("manager %s not ready after 90s; log %s", m.Name, m.LogPath)
}

// Pid of the running process.
func (m *Manager) Pid() int { return m.cmd.Process.Pid }

// Alive reports whether the process runs.
func (m *Manager) Alive() bool {
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the exit.
func (m *Manager) Kill() {
	if !m.Alive() {
		return
	}
	_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
	<-m.done
}

// Stop sends SIGTERM, then SIGKILL after 10s.
func (m *Manager) Stop() {
	if m.cmd == nil || !m.Alive() {
		return
	}
	_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		m.Kill()
	}
}

// RSS returns the current and peak resident set size in bytes (VmRSS, VmHWM).
func (m *Manager) RSS() (cur, peak int64) { return procRSS(m.Pid()) }

func procRSS(pid int) (cur, peak int64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			cur = v * 1024
		case "VmHWM:":
			peak = v * 1024
		}
	}
	return cur, peak
}

var gcLine = regexp.MustCompile(`gc \d+ @[0-9.]+s [0-9]+%: .* (\d+)->(\d+)->(\d+) MB`)

// LiveHeap is the heap marked live by the manager's last garbage
// collection, in bytes (1 MB resolution), from GODEBUG=gctrace=1 output
// (set it in ManagerEnv); -1 when no collection was logged.
func (m *Manager) LiveHeap() int64 {
	data, _ := os.ReadFile(m.LogPath)
	all := gcLine.FindAllSubmatch(data, -1)
	if len(all) == 0 {
		return -1
	}
	v, _ := strconv.ParseInt(string(all[len(all)-1][3]), 10, 64)
	return v << 20
}

// Logs returns the manager log's last max bytes.
func (m *Manager) Logs(max int) string {
	data, _ := os.ReadFile(m.LogPath)
	if len(data) > max {
		data = data[len(data)-max:]
	}
	return string(data)
}

// RestartAPIServer stops the cluster's kube-apiserver (SIGTERM, or SIGKILL
// when kill) and starts it again with the same arguments, waiting for
// /readyz. The launcher does not expose the process, so it is found by its
// --cert-dir, which is the cluster's own directory.
func (e *Env) RestartAPIServer(kill bool) (down time.Duration, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var pid int
	var args []string
	if e.apiserver != nil {
		pid, args = e.apiserver.Process.Pid, e.apiserver.Args
	} else {
		pid, args, err = findAPIServer(e.Cluster.Dir)
		if err != nil {
			return 0, err
		}
	}
	t := time.Now()
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	_ = syscall.Kill(pid, sig)
	for i := 0; i < 300; i++ {
		if e.apiserver != nil {
			select {
			case <-e.apiDone:
				i = 300
				continue
			case <-time.After(100 * time.Millisecond):
				continue
			}
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil || isZombie(pid) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	f, err := os.OpenFile(filepath.Join(e.Cluster.Dir, "kube-apiserver-restarted.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	port := ""
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--secure-port="); ok {
			port = v
		}
	}
	hc, err := rest.HTTPClientFor(e.Cluster.Config)
	if err != nil {
		return 0, err
	}
	// The old process may hold its port for a moment after the signal; a
	// start that loses the race exits at once and is tried again.
	for attempt := 0; attempt < 20; attempt++ {
		waitPortFree(port, 30*time.Second)
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdout, cmd.Stderr = f, f
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		e.apiserver, e.apiDone = cmd, done
		for time.Since(t) < 180*time.Second {
			select {
			case <-done:
				goto again
			default:
			}
			if resp, err := hc.Get(e.Cluster.Config.Host + "/readyz"); err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return time.Since(t), nil
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		return time.Since(t), fmt.Errorf("kube-apiserver not ready 180s after restart")
	again:
		e.Logf("restarted kube-apiserver exited at once (attempt %d); trying again", attempt+1)
		time.Sleep(500 * time.Millisecond)
	}
	return time.Since(t), fmt.Errorf("kube-apiserver did not restart; see kube-apiserver-restarted.log in %s", e.Cluster.Dir)
}

func waitPortFree(port string, timeout time.Duration) {
	if port == "" {
		return
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		l, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err == nil {
			_ = l.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func isZombie(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func findAPIServer(dir string) (int, []string, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil, err
	}
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if filepath.Base(args[0]) != "kube-apiserver" {
			continue
		}
		for _, a := range args {
			if a == "--cert-dir="+dir {
				return pid, args, nil
			}
		}
	}
	return 0, nil, fmt.Errorf("no kube-apiserver with --cert-dir=%s", dir)
}

// Namespace creates a namespace with labels.
func (e *Env) Namespace(name string, labels map[string]string) error {
	_, err := e.Fast.CoreV1().Namespaces().Create(e.Ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	return err
}

// Workload is a ReplicaSet and the pods created for it.
type Workload struct {
	Namespace, Name string
	UID             string
	Replicas        int32
	Pods            []string
}

// CreateWorkloads creates count ReplicaSets of replicas pods each in ns,
// labelled app=<app>. The pods are created here, owned by their ReplicaSet
// and bound to nodes round-robin, instead of by kube-controller-manager at
// its 20 requests/s through the scheduler. The ReplicaSet's template names
// a ServiceAccount that does not exist, so the ReplicaSet controller cannot
// race these creations with its own pods (admission refuses them); it still
// counts, scales and deletes the pods it owns.
func (e *Env) CreateWorkloads(ns, prefix, app string, count int, replicas int32, workers int) ([]*Workload, error) {
	ws := make([]*Workload, count)
	var next atomic.Int64
	var firstErr atomic.Value
	var created atomic.Int64
	var wg sync.WaitGroup
	nodes := e.Cluster.Nodes
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= count || firstErr.Load() != nil {
					return
				}
				w, err := e.createWorkload(ns, fmt.Sprintf("%s-%d", prefix, i), app, replicas, nodes, i)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				ws[i] = w
				if n := created.Add(int64(replicas)); n%2000 < int64(replicas) {
					e.Logf("  %d pods created (%s)", n, time.Since(start).Round(time.Second))
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok && err != nil {
		return nil, err
	}
	return ws, nil
}

func (e *Env) createWorkload(ns, name, app string, replicas int32, nodes []string, i int) (*Workload, error) {
	labels := map[string]string{"app": app, "workload": name}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       withServiceAccount(podSpec(""), "kit-no-such-serviceaccount"),
			},
		},
	}
	rs, err := e.Fast.AppsV1().ReplicaSets(ns).Create(e.Ctx, rs, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("ReplicaSet %s/%s: %w", ns, name, err)
	}
	w := &Workload{Namespace: ns, Name: name, UID: string(rs.UID), Replicas: replicas}
	for j := range replicas {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: fmt.Sprintf("%s-%d", name, j), Namespace: ns, Labels: labels,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: name, UID: rs.UID,
					Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
			},
			Spec: podSpec(nodes[(i*int(replicas)+int(j))%len(nodes)]),
		}
		if _, err := e.Fast.CoreV1().Pods(ns).Create(e.Ctx, pod, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("pod %s/%s: %w", ns, pod.Name, err)
		}
		w.Pods = append(w.Pods, pod.Name)
	}
	return w, nil
}

// Pod creates a bare pod (no owner) bound to a node.
func (e *Env) Pod(ns, name string, labels map[string]string, node string) error {
	_, err := e.Fast.CoreV1().Pods(ns).Create(e.Ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec:       podSpec(node),
	}, metav1.CreateOptions{})
	return err
}

func withServiceAccount(s corev1.PodSpec, sa string) corev1.PodSpec {
	s.ServiceAccountName = sa
	return s
}

func podSpec(node string) corev1.PodSpec {
	return corev1.PodSpec{
		NodeName:    node,
		Tolerations: []corev1.Toleration{{Key: "kwok.x-k8s.io/node", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
		Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1.0",
			SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), RunAsNonRoot: ptr.To(true),
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}}},
	}
}

// Score is one POST /v1/scores object.
type Score struct {
	Namespace string  `json:"namespace"`
	Pod       string  `json:"pod"`
	Detector  string  `json:"detector"`
	Score     float64 `json:"score"`
	Reason    string  `json:"reason,omitempty"`
}

// HTTP is a client with enough idle connections for parallel posting.
var HTTP = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute}}

// Post posts one score or a batch to url/v1/scores and returns the status.
func (e *Env) Post(url string, scores ...Score) (int, string, error) {
	var body any = scores
	if len(scores) == 1 {
		body = scores[0]
	}
	data, err := json.Marshal(body)
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequestWithContext(e.Ctx, http.MethodPost, url+"/v1/scores", bytes.NewReader(data))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+e.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := HTTP.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return resp.StatusCode, string(msg), nil
}

// PolicyYAML is an Enforce ThreatPolicy for the load detector selecting
// namespaces labelled load=<sel> and pods app=<app>.
func PolicyYAML(name, sel, app string, sustain, maxActive int, actions string, protected ...string) string {
	prot := ""
	if len(protected) > 0 {
		prot = "\n    protectedNamespaces: [" + strings.Join(protected, ", ") + "]"
	}
	return fmt.Sprintf(`apiVersion: security.bulkhead.dev/v1alpha1
kind: ThreatPolicy
metadata: {name: %s}
spec:
  mode: Enforce
  selector:
    namespaceSelector: {matchLabels: {load: %s}}
    podSelector: {matchLabels: {app: %s}}
  detectors:
  - {name: %s, weight: 100}
  scoring:
    threshold: "0.80"
    sustain: %d
  response:
  - minScore: "0.80"
    actions: %s
  safeguards:
    maxActiveQuarantines: %d
    cooldown: 1s%s
`, name, sel, app, Detector, sustain, actions, maxActive, prot)
}

// Apply server-side applies YAML as the admin.
func (e *Env) Apply(yaml string) error {
	_, err := e.Cluster.Kubectl(e.Ctx, strings.NewReader(yaml), "apply", "--server-side", "--field-manager=load", "-f", "-")
	return err
}
