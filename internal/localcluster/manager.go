package localcluster

import (
	"context"
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
)

// Manager is the bulkhead manager running as a local process under its
// ServiceAccount's identity.
type Manager struct {
	*Process
	// Args it was started with.
	Args []string
	// Kubeconfig carries only the ServiceAccount token: every API call the
	// manager makes is authorised by config/rbac.
	Kubeconfig string
	// User is the identity the API server sees.
	User string
}

// ManagerOptions start the manager.
type ManagerOptions struct {
	// Binary is the bulkhead binary (make build). Default: $BULKHEAD_BIN.
	Binary string
	// Args replace the Deployment's arguments of the same flags, or are
	// added (the probe and metrics addresses are always replaced with free
	// loopback ports).
	Args []string
}

// StartManager requests a token for the installed ServiceAccount, writes a
// kubeconfig holding only that token, starts the manager with the
// Deployment's arguments and waits until it reports ready.
func (c *Cluster) StartManager(ctx context.Context, inst *Install, opts ManagerOptions) (*Manager, error) {
	t := time.Now()
	if opts.Binary == "" {
		opts.Binary = os.Getenv("BULKHEAD_BIN")
	}
	if _, err := os.Stat(opts.Binary); opts.Binary == "" || err != nil {
		return nil, fmt.Errorf("bulkhead binary %q not found: set BULKHEAD_BIN (run through make, which runs `make build`)", opts.Binary)
	}
	tr, err := c.Kube.CoreV1().ServiceAccounts(inst.Namespace).CreateToken(ctx, inst.ServiceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](24 * 3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("requesting a token for ServiceAccount %s/%s: %w", inst.Namespace, inst.ServiceAccount, err)
	}
	m := &Manager{
		Kubeconfig: filepath.Join(c.Dir, "manager.kubeconfig"),
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

	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	probe := hostPort(ports[0])
	extra := append([]string{"--health-probe-bind-address=" + probe, "--metrics-bind-address=" + hostPort(ports[1])}, opts.Args...)
	overridden := map[string]bool{}
	for _, a := range extra {
		overridden[flagName(a)] = true
	}
	for _, a := range inst.ManagerArgs {
		if !overridden[flagName(a)] {
			m.Args = append(m.Args, a)
		}
	}
	m.Args = append(m.Args, extra...)
	// controller-runtime reads KUBECONFIG; the admin kubeconfig is never seen.
	p, err := startProcess(c.Dir, "manager", opts.Binary, m.Args, []string{"KUBECONFIG=" + m.Kubeconfig})
	if err != nil {
		return nil, err
	}
	m.Process = p
	c.add(p)
	err = p.waitFor(ctx, 60*time.Second, "manager /readyz", func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, "http://"+probe+"/readyz")
	})
	if err != nil {
		return nil, err
	}
	c.opts.Logf("manager ready in %s as %s", time.Since(t).Round(100*time.Millisecond), m.User)
	return m, nil
}

// flagName is "--name" of "--name=value".
func flagName(arg string) string {
	name, _, _ := strings.Cut(arg, "=")
	return name
}
