// Package nodekit is the host side of running `bulkhead sensor` against a
// local cluster with kwok nodes: kubelet-style cgroups for kwok pods under a
// private root, real processes started inside them, the sensor's pod-bound
// ingest token, and `bulkhead sensor` processes. Everything a Kit creates is
// undone by Close, in reverse order, even after a partial failure. It needs
// root, cgroup v2 and a kernel with BPF and BTF (Available says which is
// missing).
package nodekit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/bulkhead-dev/bulkhead/internal/sensor/cgroups"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
)

// SensorServiceAccount is config/sensor's ServiceAccount after
// config/default's name prefix.
const SensorServiceAccount = "bulkhead-sensor"

// UnifiedRoot is the cgroup v2 hierarchy: /sys/fs/cgroup/unified on a
// hybrid host, else /sys/fs/cgroup; "" when there is none.
func UnifiedRoot() string {
	for _, p := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(p, "cgroup.controllers")); err == nil {
			return p
		}
	}
	return ""
}

// Available says what this host lacks to run the sensor for real: root, a
// cgroup v2 hierarchy, BTF; nil when it has all of them. (Whether BPF
// programs load is only known when the sensor tries: it then reports not
// ready, which Sensor.Ready returns.)
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("not root (cgroups and BPF need it)")
	}
	if UnifiedRoot() == "" {
		return errors.New("no cgroup v2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return errors.New("kernel without BTF (/sys/kernel/btf/vmlinux): the sensor's CO-RE programs cannot load")
	}
	return nil
}

// Kit owns a private cgroup root, a private bpffs and a work directory.
type Kit struct {
	// Root is the private cgroup root to pass as --cgroup-root.
	Root string
	// PinDir is a private bpffs mount; sensors pin below it (--bpf-pin-dir).
	PinDir string
	// Dir holds logs, tokens and kubeconfigs.
	Dir string

	mu      sync.Mutex
	cleanup []func() error
}

// New creates the cgroup root and mounts bpffs under dir.
func New(dir string) (k *Kit, err error) {
	if err := Available(); err != nil {
		return nil, err
	}
	k = &Kit{Dir: dir}
	defer func() {
		if err != nil {
			_ = k.Close()
			k = nil
		}
	}()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	k.Root = filepath.Join(UnifiedRoot(), "bulkhead-nodekit-"+RandHex(4))
	if err := os.Mkdir(k.Root, 0o755); err != nil {
		return nil, fmt.Errorf("creating the private cgroup root: %w", err)
	}
	k.onClose(func() error { return RemoveCgroupTree(k.Root) })
	k.PinDir = filepath.Join(dir, "bpffs")
	if err := os.Mkdir(k.PinDir, 0o700); err != nil {
		return nil, err
	}
	if err := syscall.Mount("bpf", k.PinDir, "bpf", 0, "mode=0700"); err != nil {
		return nil, fmt.Errorf("cannot mount bpffs at %s (BPF unavailable): %w", k.PinDir, err)
	}
	k.onClose(func() error {
		if err := syscall.Unmount(k.PinDir, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("unmounting bpffs %s: %w", k.PinDir, err)
		}
		return nil
	})
	return k, nil
}

func (k *Kit) onClose(f func() error) {
	k.mu.Lock()
	k.cleanup = append(k.cleanup, f)
	k.mu.Unlock()
}

// Close stops every process, removes every cgroup and unmounts bpffs, in
// reverse order of creation. It can be called more than once.
func (k *Kit) Close() error {
	k.mu.Lock()
	fs := k.cleanup
	k.cleanup = nil
	k.mu.Unlock()
	var errs []error
	for i := len(fs) - 1; i >= 0; i-- {
		errs = append(errs, fs[i]())
	}
	return errors.Join(errs...)
}

// Pins lists the files pinned below PinDir, leaving out the iterators a
// kernel with CONFIG_BPF_PRELOAD puts in every bpffs mount.
func (k *Kit) Pins() []string {
	var pins []string
	_ = filepath.WalkDir(k.PinDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if dir, name := filepath.Split(p); filepath.Clean(dir) == k.PinDir && (name == "maps.debug" || name == "progs.debug") {
			return nil
		}
		pins = append(pins, p)
		return nil
	})
	return pins
}

// RemoveCgroupTree kills every process below root (cgroup.kill) and
// removes the cgroups deepest first.
func RemoveCgroupTree(root string) error {
	if err := os.WriteFile(filepath.Join(root, "cgroup.kill"), []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("killing processes in %s: %w", root, err)
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
				return fmt.Errorf("removing cgroup %s: %w", dirs[i], err)
			}
			time.Sleep(100 * time.Millisecond) // killed processes still exiting
		}
	}
	return nil
}

// Container is one kwok pod's container: its cgroup at the kubelet's
// systemd/containerd path, below the Kit's root.
type Container struct {
	k   *Kit
	Pod corev1.Pod
	// Path is the cgroup's absolute path; Rel is relative to the root.
	Path, Rel string
	ID        string
}

// Container creates the cgroup of a container of pod.
func (k *Kit) Container(pod corev1.Pod) (*Container, error) {
	id := RandHex(32)
	rel := cgroups.ContainerPath(cgroups.Systemd, "burstable", string(pod.UID), "containerd", id)
	c := &Container{k: k, Pod: pod, Path: filepath.Join(k.Root, rel), Rel: rel, ID: id}
	if err := os.MkdirAll(c.Path, 0o755); err != nil {
		return nil, fmt.Errorf("creating cgroup for pod %s: %w", pod.Name, err)
	}
	return c, nil
}

// Proc is a process started by the Kit.
type Proc struct {
	Cmd     *exec.Cmd
	LogPath string
	done    chan struct{}
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *Proc) Stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Log is the end of the process's output, at most max bytes.
func (p *Proc) Log(max int64) string { return Tail(p.LogPath, max) }

func (k *Kit) start(name string, cgroupFD int, env []string, bin string, args ...string) (*Proc, error) {
	logPath := filepath.Join(k.Dir, name+".log")
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if cgroupFD >= 0 {
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, cgroupFD
	}
	if err := cmd.Start(); err != nil {
		_ = out.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Proc{Cmd: cmd, LogPath: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); _ = out.Close(); close(p.done) }()
	k.onClose(func() error { p.Stop(10 * time.Second); return nil })
	return p, nil
}

// Start runs a program inside the container's cgroup (CLONE_INTO_CGROUP,
// so it never runs outside it); its output goes to <Dir>/<name>.log.
func (c *Container) Start(name, bin string, args ...string) (*Proc, error) {
	fd, err := syscall.Open(c.Path, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	defer func() { _ = syscall.Close(fd) }()
	return c.k.start(c.Pod.Name+"-"+name, fd, nil, bin, args...)
}

// SensorIdentity is what a sensor process runs as: a kubeconfig for the
// API and a pod-bound ingest token, both of the sensor's ServiceAccount.
type SensorIdentity struct {
	// Anchor is the pod a DaemonSet would have made on the node; the
	// tokens are bound to it (the manager checks its spec.nodeName).
	Anchor *corev1.Pod
	// IngestToken has audience bulkhead-ingest; TokenFile holds it.
	IngestToken, TokenFile string
	// Kubeconfig holds only the sensor's API token.
	Kubeconfig string
}

// MintSensorIdentity creates an anchor pod of the sensor ServiceAccount on
// node (deleted by Close) and requests its tokens, as the DaemonSet's
// projected token would be.
func (k *Kit) MintSensorIdentity(ctx context.Context, cfg *rest.Config, namespace, node string) (*SensorIdentity, error) {
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	id, err := mintSensorIdentity(ctx, kube, cfg, namespace, node, filepath.Join(k.Dir, "sensor-"+node))
	if id != nil && id.Anchor != nil {
		k.onClose(func() error { return DeleteAnchor(kube, id.Anchor) })
	}
	return id, err
}

// MintSensorIdentity is Kit.MintSensorIdentity without a Kit (no root
// needed): the caller deletes Anchor with DeleteAnchor.
func MintSensorIdentity(ctx context.Context, cfg *rest.Config, namespace, node, dir string) (*SensorIdentity, error) {
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return mintSensorIdentity(ctx, kube, cfg, namespace, node, dir)
}

// DeleteAnchor deletes a sensor identity's anchor pod.
func DeleteAnchor(kube kubernetes.Interface, pod *corev1.Pod) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := kube.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	if err != nil && !strings.Contains(err.Error(), "not found") {
		return err
	}
	return nil
}

func mintSensorIdentity(ctx context.Context, kube kubernetes.Interface, cfg *rest.Config, ns, node, dir string) (*SensorIdentity, error) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "bulkhead-sensor-" + node + "-" + RandHex(2), Namespace: ns, Labels: map[string]string{"app.kubernetes.io/component": "sensor"}},
		Spec: corev1.PodSpec{
			NodeName:                     node,
			ServiceAccountName:           SensorServiceAccount,
			AutomountServiceAccountToken: ptr.To(false),
			Tolerations:                  []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			// Only an identity anchor for the bound token (nothing runs in
			// it), so it passes the namespace's restricted Pod Security.
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{Name: "sensor", Image: "bulkhead:local", SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}},
		},
	}
	created, err := kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating the sensor's anchor pod on %s: %w", node, err)
	}
	id := &SensorIdentity{Anchor: created}
	bound := &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: created.Name, UID: created.UID}
	ingest, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, SensorServiceAccount, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{wire.Audience}, ExpirationSeconds: ptr.To[int64](3600), BoundObjectRef: bound,
	}}, metav1.CreateOptions{})
	if err != nil {
		return id, fmt.Errorf("requesting the sensor's pod-bound ingest token: %w", err)
	}
	api, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, SensorServiceAccount, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To[int64](3600), BoundObjectRef: bound,
	}}, metav1.CreateOptions{})
	if err != nil {
		return id, fmt.Errorf("requesting the sensor's API token: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return id, err
	}
	id.IngestToken = ingest.Status.Token
	id.TokenFile = filepath.Join(dir, "ingest-token")
	if err := os.WriteFile(id.TokenFile, []byte(ingest.Status.Token), 0o600); err != nil {
		return id, err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthority: cfg.CAFile, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["sensor"] = &clientcmdapi.AuthInfo{Token: api.Status.Token}
	kc.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "sensor"}
	kc.CurrentContext = "local"
	id.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, id.Kubeconfig); err != nil {
		return id, err
	}
	return id, nil
}

// SensorOptions start one `bulkhead sensor` process.
type SensorOptions struct {
	// Binary is the bulkhead binary.
	Binary string
	Node   string
	// IngestURL is where the sensor posts its reports (the manager's
	// ingestion, or a recorder in front of it).
	IngestURL string
	// CAFile verifies an https IngestURL.
	CAFile           string
	ManagerNamespace string
	LearningWindow   time.Duration
	// Heartbeat is --heartbeat-interval; default 5s.
	Heartbeat time.Duration
	Identity  *SensorIdentity
	// Health and Metrics are loopback addresses (host:port).
	Health, Metrics string
	// Args are added last.
	Args []string
}

// Sensor is a running `bulkhead sensor`.
type Sensor struct {
	*Proc
	Args   []string
	health string
}

// StartSensor runs `bulkhead sensor` for a node as a process; Close stops it.
func (k *Kit) StartSensor(o SensorOptions) (*Sensor, error) {
	if o.Heartbeat == 0 {
		o.Heartbeat = 5 * time.Second
	}
	args := []string{"sensor",
		"--node-name=" + o.Node,
		"--cgroup-root=" + k.Root,
		"--ingest-url=" + o.IngestURL,
		"--token-file=" + o.Identity.TokenFile,
		"--learning-window=" + o.LearningWindow.String(),
		"--manager-namespace=" + o.ManagerNamespace,
		"--bpf-pin-dir=" + filepath.Join(k.PinDir, o.Node),
		"--heartbeat-interval=" + o.Heartbeat.String(),
		"--health-probe-bind-address=" + o.Health,
		"--metrics-bind-address=" + o.Metrics,
	}
	if o.CAFile != "" {
		args = append(args, "--ca-file="+o.CAFile)
	}
	args = append(args, o.Args...)
	p, err := k.start("sensor-"+o.Node, -1, []string{"KUBECONFIG=" + o.Identity.Kubeconfig}, o.Binary, args...)
	if err != nil {
		return nil, err
	}
	return &Sensor{Proc: p, Args: args, health: o.Health}, nil
}

// Ready checks the sensor's /readyz once: nil when behaviour collection
// is up, else why not (or that the sensor exited).
func (s *Sensor) Ready(ctx context.Context) error {
	select {
	case <-s.done:
		return fmt.Errorf("sensor exited: %v\n%s", s.Cmd.ProcessState, s.Log(4096))
	default:
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.health+"/readyz", nil)
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
}

// Tail is the end of a file, at most max bytes.
func Tail(path string, max int64) string {
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

// RandHex is n random bytes in hex.
func RandHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
