package localcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/bulkhead-dev/bulkhead/test/framework"
)

// Manager is the bulkhead manager running as a local process under its
// ServiceAccount's identity. Every suite and the demo start it here.
type Manager struct {
	*Process
	// Binary and Args it runs with.
	Binary string
	Args   []string
	// Kubeconfig carries only the ServiceAccount token: every API call the
	// manager makes is authorised by config/rbac.
	Kubeconfig string
	// User is the identity the API server sees.
	User string
	// Probe is the health probe address (host:port).
	Probe string
	// Ingest is its signal-ingestion API, when started with credentials.
	Ingest framework.Ingest
}

// IngestCredentials is a token file for the manager's ingestion API with one
// random bearer token.
type IngestCredentials struct {
	Token string
	File  string
}

// IngestCredentials writes <Dir>/ingest-tokens with one random token for
// the client name, allowed to speak for detectors (at least one: the
// manager refuses a credential that names none).
func (c *Cluster) IngestCredentials(name string, detectors ...string) (*IngestCredentials, error) {
	return c.ingestCredentials(name, false, detectors)
}

// TrainingCredentials are IngestCredentials that may also send training
// input for the behaviour baselines (/v1/syscalls, Tetragon process_exec).
func (c *Cluster) TrainingCredentials(name string, detectors ...string) (*IngestCredentials, error) {
	return c.ingestCredentials(name, true, detectors)
}

func (c *Cluster) ingestCredentials(name string, train bool, detectors []string) (*IngestCredentials, error) {
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	creds := &IngestCredentials{Token: hex.EncodeToString(tok), File: filepath.Join(c.Dir, "ingest-tokens")}
	line := creds.Token + " name=" + name
	if len(detectors) > 0 {
		line += " detectors=" + strings.Join(detectors, ",")
	}
	if train {
		line += " train=true"
	}
	if err := os.WriteFile(creds.File, []byte(line+"\n"), 0o600); err != nil {
		return nil, err
	}
	return creds, nil
}

// ManagerOptions start the manager.
type ManagerOptions struct {
	// Name names its log (<Dir>/<Name>.log) and kubeconfig; several
	// managers (leader election) need distinct names. Default "manager".
	Name string
	// Binary is the bulkhead binary (make build). Default: $BULKHEAD_BIN,
	// else bin/bulkhead in the repository.
	Binary string
	// Args replace the Deployment's arguments of the same flags, or are
	// added. The probe and metrics addresses are set to free loopback ports
	// first, so Args can still replace them ("--metrics-bind-address=0").
	Args []string
	// Env is added to the manager's environment.
	Env []string
	// Ingest, when set, serves signal ingestion as plain HTTP on a free
	// loopback port with these credentials (Manager.Ingest).
	Ingest *IngestCredentials
}

// StartManager requests a token for the installed ServiceAccount, writes a
// kubeconfig holding only that token, starts the manager with the
// Deployment's arguments and waits until it reports ready. The cluster stops
// it on Stop; Start starts it again after a Kill.
func (c *Cluster) StartManager(ctx context.Context, inst *Install, opts ManagerOptions) (*Manager, error) {
	t := time.Now()
	if opts.Name == "" {
		opts.Name = "manager"
	}
	if opts.Binary == "" {
		opts.Binary = os.Getenv("BULKHEAD_BIN")
	}
	if opts.Binary == "" {
		opts.Binary = filepath.Join(framework.RepoRoot(), "bin", "bulkhead")
	}
	if _, err := os.Stat(opts.Binary); err != nil {
		return nil, fmt.Errorf("bulkhead binary %q not found: set BULKHEAD_BIN (run through make, which runs `make build`)", opts.Binary)
	}
	tr, err := c.Kube.CoreV1().ServiceAccounts(inst.Namespace).CreateToken(ctx, inst.ServiceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](24 * 3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("requesting a token for ServiceAccount %s/%s: %w", inst.Namespace, inst.ServiceAccount, err)
	}
	m := &Manager{
		Binary:     opts.Binary,
		Kubeconfig: c.kubeconfigPath(opts.Name),
		User:       "system:serviceaccount:" + inst.Namespace + ":" + inst.ServiceAccount,
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: c.server, CertificateAuthority: c.pki.path("ca.crt")}
	cfg.AuthInfos[m.User] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: m.User, Namespace: inst.Namespace}
	cfg.CurrentContext = "local"
	if err := clientcmd.WriteToFile(*cfg, m.Kubeconfig); err != nil {
		return nil, err
	}

	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	m.Probe = hostPort(ports[0])
	extra := []string{"--health-probe-bind-address=" + m.Probe, "--metrics-bind-address=" + hostPort(ports[1])}
	if opts.Ingest != nil {
		m.Ingest = framework.Ingest{URL: "http://" + hostPort(ports[2]), Token: opts.Ingest.Token}
		extra = append(extra, "--ingest-bind-address="+hostPort(ports[2]), "--ingest-insecure", "--ingest-token-file="+opts.Ingest.File)
	}
	extra = append(extra, opts.Args...)
	overridden := map[string]bool{}
	for _, a := range extra {
		overridden[flagName(a)] = true
	}
	for _, a := range inst.ManagerArgs {
		if !overridden[flagName(a)] {
			m.Args = append(m.Args, a)
		}
	}
	// The last of a repeated flag wins, as in the manager's flag parsing.
	m.Args = append(m.Args, extra...)
	// controller-runtime reads KUBECONFIG; the admin kubeconfig is never seen.
	env := append([]string{"KUBECONFIG=" + m.Kubeconfig}, opts.Env...)
	m.Process = &Process{Name: opts.Name, LogPath: filepath.Join(c.Dir, opts.Name+".log"), bin: opts.Binary, args: m.Args, env: env}
	c.add(m.Process)
	if err := m.Start(ctx); err != nil {
		return nil, err
	}
	c.opts.Logf("%s ready in %s as %s", opts.Name, time.Since(t).Round(100*time.Millisecond), m.User)
	return m, nil
}

// Start (re)starts the manager, appending to its log, and waits for /readyz.
func (m *Manager) Start(ctx context.Context) error {
	if err := m.start(); err != nil {
		return err
	}
	return m.waitFor(ctx, 90*time.Second, m.Name+" /readyz", func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, "http://"+m.Probe+"/readyz")
	})
}

// Restart starts the manager again like a kubelet would: a start that
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

// flagName is "--name" of "--name=value".
func flagName(arg string) string {
	name, _, _ := strings.Cut(arg, "=")
	return name
}
