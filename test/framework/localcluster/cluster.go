// Package localcluster starts a real local Kubernetes control plane — etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler — and kwok, which
// simulates nodes and the pods scheduled on them, all as child processes from
// binaries built from the Go module proxy into bin/. It installs Bulkhead from
// config/ and runs the manager binary as a local process authenticated as its
// ServiceAccount, so config/rbac is what is enforced. The demo and the e2e
// tests, and the chaos, flood and bench suites through test/framework/kit,
// use it.
package localcluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/test/framework"
)

// KwokNodeAnnotation marks the nodes kwok manages.
const KwokNodeAnnotation = "kwok.x-k8s.io/node"

// Scheme knows the built-in kinds and Bulkhead's.
var Scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(Scheme))
	utilruntime.Must(securityv1alpha1.AddToScheme(Scheme))
}

// Options configure a cluster. Zero values take the defaults noted.
type Options struct {
	// KubeBin holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler and kubectl. Default: $KUBE_BIN, else $KUBEBUILDER_ASSETS.
	KubeBin string
	// Kwok is the kwok binary. Default: $KWOK_BIN.
	Kwok string
	// KwokStages is a YAML file of kwok Stages (node and pod lifecycles).
	// Default: stages.yaml beside the kwok binary.
	KwokStages string
	// Nodes is the number of simulated nodes. Default 3.
	Nodes int
	// Logf prints progress. Default: discard.
	Logf func(format string, args ...any)
}

// Cluster is a running local control plane.
type Cluster struct {
	// Dir holds certificates, kubeconfigs, data and every component's log.
	Dir string
	// Kubeconfig is an admin (system:masters) kubeconfig.
	Kubeconfig string
	// Config, Kube and Client act as the cluster admin.
	Config *rest.Config
	Kube   kubernetes.Interface
	Client client.Client
	// Nodes are the simulated nodes' names.
	Nodes []string

	opts      Options
	pki       *pki
	server    string
	apiPort   int
	mu        sync.Mutex
	procs     []*Process
	stopped   bool
	startedAt time.Time
}

func (o *Options) defaults() error {
	if o.KubeBin == "" {
		o.KubeBin = os.Getenv("KUBE_BIN")
	}
	if o.KubeBin == "" {
		o.KubeBin = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if o.KubeBin == "" {
		return fmt.Errorf("no control-plane binaries: set KUBE_BIN (run through make, which builds them with `make kube-binaries`)")
	}
	if o.Kwok == "" {
		o.Kwok = os.Getenv("KWOK_BIN")
	}
	if o.Kwok == "" {
		return fmt.Errorf("no kwok binary: set KWOK_BIN (run through make, which builds it with `make kwok`)")
	}
	if o.KwokStages == "" {
		o.KwokStages = filepath.Join(filepath.Dir(o.Kwok), "stages.yaml")
	}
	for _, f := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"} {
		if _, err := os.Stat(filepath.Join(o.KubeBin, f)); err != nil {
			return fmt.Errorf("%s not found in %s: run `make kube-binaries`", f, o.KubeBin)
		}
	}
	for _, f := range []string{o.Kwok, o.KwokStages} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%s not found: run `make kwok`", f)
		}
	}
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

// Start boots the control plane and kwok, creates the simulated nodes and
// waits until they are Ready. On error everything started is stopped. Call
// Stop when done (also on Ctrl-C: see StopOnSignal).
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "bulkhead-cluster-")
	if err != nil {
		return nil, err
	}
	c = &Cluster{Dir: dir, opts: opts, startedAt: time.Now()}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if err := c.writePKI(); err != nil {
		return c, fmt.Errorf("certificates: %w", err)
	}
	ports, err := freePorts(4)
	if err != nil {
		return c, err
	}
	etcdPort, peerPort, apiPort, kwokPort := ports[0], ports[1], ports[2], ports[3]
	c.server, c.apiPort = "https://"+hostPort(apiPort), apiPort

	if err := c.startEtcd(ctx, etcdPort, peerPort); err != nil {
		return c, err
	}
	if err := c.startAPIServer(ctx, apiPort, etcdPort); err != nil {
		return c, err
	}
	if err := c.startControllers(kwokPort); err != nil {
		return c, err
	}
	if err := c.createNodes(ctx); err != nil {
		return c, err
	}
	if err := c.waitForDefaultServiceAccount(ctx); err != nil {
		return c, err
	}
	c.opts.Logf("cluster ready in %s: %d kwok nodes, kubeconfig %s", time.Since(c.startedAt).Round(100*time.Millisecond), len(c.Nodes), c.Kubeconfig)
	return c, nil
}

func (c *Cluster) writePKI() error {
	p, err := newPKI(c.Dir)
	if err != nil {
		return err
	}
	c.pki = p
	for _, id := range []struct {
		name, cn string
		orgs     []string
		server   bool
	}{
		{"apiserver", "kube-apiserver", nil, true},
		{"admin", "bulkhead-localcluster-admin", []string{"system:masters"}, false},
		{"controller-manager", "system:kube-controller-manager", nil, false},
		{"scheduler", "system:kube-scheduler", nil, false},
		// kwok plays every kubelet; kubelet identities are per node, so it
		// gets the cluster-admin group instead.
		{"kwok", "kwok", []string{"system:masters"}, false},
	} {
		if err := p.issue(id.name, id.cn, id.orgs, id.server); err != nil {
			return err
		}
	}
	return p.serviceAccountKey()
}

func (c *Cluster) bin(name string) string { return filepath.Join(c.opts.KubeBin, name) }

func (c *Cluster) add(p *Process) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.procs = append(c.procs, p)
}

func (c *Cluster) startEtcd(ctx context.Context, port, peerPort int) error {
	t := time.Now()
	url := "http://" + hostPort(port)
	p, err := startProcess(c.Dir, "etcd", c.bin("etcd"), []string{
		"--name=local",
		"--data-dir=" + filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls=" + url,
		"--advertise-client-urls=" + url,
		"--listen-peer-urls=http://" + hostPort(peerPort),
		"--initial-advertise-peer-urls=http://" + hostPort(peerPort),
		"--initial-cluster=local=http://" + hostPort(peerPort),
		// A throwaway cluster: durability buys nothing and costs seconds.
		"--unsafe-no-fsync",
		"--log-level=warn",
	}, nil)
	if err != nil {
		return err
	}
	c.add(p)
	err = p.waitFor(ctx, 30*time.Second, "etcd health", func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, url+"/health")
	})
	if err == nil {
		c.opts.Logf("etcd up in %s", time.Since(t).Round(100*time.Millisecond))
	}
	return err
}

// auditArgs turn on the API server's audit log (metadata of every
// request's completion, as JSON lines in dir/audit.log) when
// BULKHEAD_APISERVER_AUDIT is set: a diagnostic for where a benchmark's
// requests go and when, not for tests (it costs the API server CPU).
func auditArgs(dir string) []string {
	if os.Getenv("BULKHEAD_APISERVER_AUDIT") == "" {
		return nil
	}
	policy := filepath.Join(dir, "audit-policy.yaml")
	const rules = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: Metadata\n"
	if err := os.WriteFile(policy, []byte(rules), 0o600); err != nil {
		return nil
	}
	return []string{"--audit-policy-file=" + policy, "--audit-log-path=" + filepath.Join(dir, "audit.log"), "--audit-log-format=json", "--audit-log-mode=batch"}
}

func (c *Cluster) startAPIServer(ctx context.Context, port, etcdPort int) error {
	t := time.Now()
	f := c.pki.path
	p, err := startProcess(c.Dir, "kube-apiserver", c.bin("kube-apiserver"), append([]string{
		"--etcd-servers=http://" + hostPort(etcdPort),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// The default reconciler refuses a loopback address; nothing here
		// reaches the API through the kubernetes Service.
		"--endpoint-reconciler-type=none",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + c.Dir,
		"--tls-cert-file=" + f("apiserver.crt"),
		"--tls-private-key-file=" + f("apiserver.key"),
		"--client-ca-file=" + f("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + f("sa.pub"),
		"--service-account-signing-key-file=" + f("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=RBAC,Node",
		// On top of the defaults (which already include ValidatingAdmissionPolicy):
		// named so that turning them off elsewhere never goes unnoticed here.
		"--enable-admission-plugins=NodeRestriction,ValidatingAdmissionPolicy,PodSecurity",
		"--allow-privileged=true",
		// /debug/pprof only for benchmarks that ask (BULKHEAD_APISERVER_PROFILING=1).
		"--profiling=" + strconv.FormatBool(os.Getenv("BULKHEAD_APISERVER_PROFILING") != ""),
	}, auditArgs(c.Dir)...), nil)
	if err != nil {
		return err
	}
	c.add(p)
	if err := c.writeKubeconfigs(); err != nil {
		return err
	}
	hc, err := rest.HTTPClientFor(c.Config)
	if err != nil {
		return err
	}
	err = p.waitFor(ctx, 90*time.Second, "kube-apiserver /readyz", func(ctx context.Context) error {
		return httpOK(ctx, hc, c.server+"/readyz")
	})
	if err == nil {
		c.opts.Logf("kube-apiserver up in %s (RBAC,Node authorization; ServiceAccount tokens signed by a local key)", time.Since(t).Round(100*time.Millisecond))
	}
	return err
}

func (c *Cluster) writeKubeconfigs() error {
	for _, name := range []string{"admin", "controller-manager", "scheduler", "kwok"} {
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: c.server, CertificateAuthority: c.pki.path("ca.crt")}
		cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificate: c.pki.path(name + ".crt"), ClientKey: c.pki.path(name + ".key")}
		cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: name}
		cfg.CurrentContext = "local"
		if err := clientcmd.WriteToFile(*cfg, c.kubeconfigPath(name)); err != nil {
			return err
		}
	}
	c.Kubeconfig = c.kubeconfigPath("admin")
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 200, 400
	c.Config = cfg
	if c.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	c.Client, err = client.New(cfg, client.Options{Scheme: Scheme})
	return err
}

func (c *Cluster) kubeconfigPath(name string) string {
	return filepath.Join(c.Dir, name+".kubeconfig")
}

// startControllers starts kube-controller-manager, kube-scheduler and kwok;
// readiness shows in the nodes becoming Ready and pods being scheduled.
func (c *Cluster) startControllers(kwokPort int) error {
	f := c.pki.path
	for _, comp := range []struct {
		name, bin string
		args      []string
	}{
		{"kube-controller-manager", c.bin("kube-controller-manager"), []string{
			"--kubeconfig=" + c.kubeconfigPath("controller-manager"),
			"--secure-port=0",
			"--leader-elect=false",
			"--use-service-account-credentials=true",
			"--service-account-private-key-file=" + f("sa.key"),
			"--root-ca-file=" + f("ca.crt"),
		}},
		{"kube-scheduler", c.bin("kube-scheduler"), []string{
			"--kubeconfig=" + c.kubeconfigPath("scheduler"),
			"--secure-port=0",
			"--leader-elect=false",
		}},
		{"kwok", c.opts.Kwok, []string{
			"--kubeconfig=" + c.kubeconfigPath("kwok"),
			"--config=" + c.opts.KwokStages,
			"--cidr=10.244.0.0/16",
			"--manage-all-nodes=false",
			"--manage-nodes-with-annotation-selector=" + KwokNodeAnnotation + "=fake",
			"--server-address=" + hostPort(kwokPort),
		}},
	} {
		p, err := startProcess(c.Dir, comp.name, comp.bin, comp.args, nil)
		if err != nil {
			return err
		}
		c.add(p)
	}
	return nil
}

func (c *Cluster) createNodes(ctx context.Context) error {
	t := time.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	for i := range c.opts.Nodes {
		name := fmt.Sprintf("kwok-node-%d", i)
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Annotations: map[string]string{KwokNodeAnnotation: "fake"},
				Labels: map[string]string{
					"type":                   "kwok",
					"kubernetes.io/hostname": name,
					"kubernetes.io/os":       "linux",
					"kubernetes.io/arch":     "amd64",
				},
			},
			Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
		}
		if _, err := c.Kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating node %s: %w", name, err)
		}
		c.Nodes = append(c.Nodes, name)
	}
	err := c.waitComponents(ctx, 60*time.Second, "kwok nodes Ready", func(ctx context.Context) error {
		for _, name := range c.Nodes {
			n, err := c.Kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !NodeReady(n) {
				return fmt.Errorf("node %s not Ready: %w", name, errNotYet)
			}
		}
		return nil
	})
	if err == nil {
		c.opts.Logf("%d kwok nodes Ready in %s", len(c.Nodes), time.Since(t).Round(100*time.Millisecond))
	}
	return err
}

// waitForDefaultServiceAccount waits for kube-controller-manager's
// ServiceAccount controller, which every pod needs.
func (c *Cluster) waitForDefaultServiceAccount(ctx context.Context) error {
	return c.waitComponents(ctx, 60*time.Second, "ServiceAccount default/default (kube-controller-manager)", func(ctx context.Context) error {
		_, err := c.Kube.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// waitComponents polls check while watching that no component has exited.
func (c *Cluster) waitComponents(ctx context.Context, timeout time.Duration, what string, check func(context.Context) error) error {
	err := framework.Wait{What: what, Timeout: timeout, Every: 200 * time.Millisecond}.Until(ctx, func(ctx context.Context) error {
		if err := c.Healthy(); err != nil {
			return framework.Permanent(fmt.Errorf("waiting for %s: %w", what, err))
		}
		return check(ctx)
	})
	if err != nil && c.Healthy() == nil {
		return fmt.Errorf("%w (logs in %s)", err, c.Dir)
	}
	return err
}

// Healthy returns an error naming the first component that has exited.
func (c *Cluster) Healthy() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("%s exited (%v); last output:\n%s", p.Name, err, p.Logs(4000))
		}
	}
	return nil
}

// RestartAPIServer stops kube-apiserver (SIGKILL when kill, else SIGTERM)
// and starts it again with the same arguments, appending to its log, then
// waits for /readyz; it returns how long the API was down. The old process
// may hold its port for a moment: a start that loses that race exits at once
// and is tried again.
func (c *Cluster) RestartAPIServer(ctx context.Context, kill bool) (time.Duration, error) {
	var p *Process
	c.mu.Lock()
	for _, q := range c.procs {
		if q.Name == "kube-apiserver" {
			p = q
		}
	}
	c.mu.Unlock()
	if p == nil {
		return 0, fmt.Errorf("no kube-apiserver in this cluster")
	}
	t := time.Now()
	if kill {
		p.Kill()
	} else {
		p.Stop(30 * time.Second)
	}
	hc, err := rest.HTTPClientFor(c.Config)
	if err != nil {
		return 0, err
	}
	for attempt := 1; attempt <= 20; attempt++ {
		waitPortFree(c.apiPort, 30*time.Second)
		if err := p.start(); err != nil {
			return time.Since(t), err
		}
		err := p.waitFor(ctx, 180*time.Second-time.Since(t), "kube-apiserver /readyz", func(ctx context.Context) error {
			return httpOK(ctx, hc, c.server+"/readyz")
		})
		if err == nil {
			return time.Since(t), nil
		}
		if p.Alive() || ctx.Err() != nil {
			return time.Since(t), err
		}
		c.opts.Logf("restarted kube-apiserver exited at once (attempt %d); trying again", attempt)
		time.Sleep(500 * time.Millisecond)
	}
	return time.Since(t), fmt.Errorf("kube-apiserver did not restart; see kube-apiserver.log in %s", c.Dir)
}

// NodeReady reports whether the node's Ready condition is True.
func NodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Stop stops every process in reverse order of start and removes Dir unless
// BULKHEAD_KEEP_CLUSTER is set. Safe to call more than once.
func (c *Cluster) Stop() {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	c.stopped = true
	procs := c.procs
	c.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop(5 * time.Second)
	}
	if os.Getenv("BULKHEAD_KEEP_CLUSTER") != "" {
		c.opts.Logf("cluster stopped; files kept in %s", c.Dir)
		return
	}
	_ = os.RemoveAll(c.Dir)
}

// Kubectl runs the cluster's kubectl as admin with stdin (may be nil) and
// returns its combined output.
func (c *Cluster) Kubectl(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.bin("kubectl"), append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
	cmd.Stdin = stdin
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// KubectlPath is the kubectl binary matching the control plane.
func (c *Cluster) KubectlPath() string { return c.bin("kubectl") }

func httpOK(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}
