//go:build packaging

// Package olm installs Bulkhead from the rendered OLM bundle (as OLM would:
// CRDs, the CSV's ServiceAccounts and permissions, the other manifests) on a
// local control plane, runs the manager with the CSV's arguments unedited
// under its ServiceAccount, and proves a signal is accepted with credentials
// from the Secret bulkhead-ingest-credentials alone (issue 15 item 2: a
// Subscription cannot add --ingest-token-file). Run by `make test-packaging`.
package olm

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/internal/ingest"
	"github.com/bulkhead-dev/bulkhead/internal/ingestca"
	"github.com/bulkhead-dev/bulkhead/test/framework"
	"github.com/bulkhead-dev/bulkhead/test/framework/localcluster"
)

var logf = framework.Logger("olm")

func TestBundleInstallAcceptsSignalsWithoutArgs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c, err := localcluster.Start(ctx, localcluster.Options{Nodes: 1, Logf: logf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	const ns = "bulkhead-system"
	inst, err := c.InstallBundle(ctx, framework.RepoRoot(), ns)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range inst.ManagerArgs {
		if strings.HasPrefix(a, "--ingest-token-file") {
			t.Fatalf("the CSV passes %s: this test must prove signals work without it", a)
		}
	}
	logf("CSV arguments: %v", inst.ManagerArgs)

	// Only the listening address is changed (other suites share the host's
	// ports); every other argument is the CSV's.
	addr := freeAddr(t)
	mgr, err := c.StartManager(ctx, inst, localcluster.ManagerOptions{Args: []string{"--ingest-bind-address=" + addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Stop(10 * time.Second)

	if _, err := c.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kube.CoreV1().Pods("shop").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop"},
		Spec: corev1.PodSpec{NodeName: c.Nodes[0], Containers: []corev1.Container{{Name: "c", Image: "registry.example/web:1"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The manager serves a certificate from the CA it publishes.
	var client *http.Client
	if err := (framework.Wait{What: "the ingest CA ConfigMap", Timeout: time.Minute, Logf: logf}).Until(ctx, func(ctx context.Context) error {
		cm, err := c.Kube.CoreV1().ConfigMaps(ns).Get(ctx, ingestca.ConfigMapName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(cm.Data[ingestca.CertKey])) {
			return fmt.Errorf("no certificate in %s", ingestca.ConfigMapName)
		}
		client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: ingestca.ServiceName + "." + ns + ".svc", MinVersion: tls.VersionTLS12}}}
		return nil
	}); err != nil {
		t.Fatalf("%v\nmanager log:\n%s", err, mgr.Logs(6000))
	}
	token := "olm-token-0123456789abcdef"
	post := func(id string) (int, string) {
		body, _ := json.Marshal(map[string]any{"namespace": "shop", "pod": "web-1", "detector": "olm-model", "score": 0.4, "id": id})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+"/v1/scores", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer func() { _ = resp.Body.Close() }()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, string(msg)
	}
	if err := (framework.Wait{What: "ingestion answering", Timeout: time.Minute, Logf: logf}).Until(ctx, func(context.Context) error {
		if code, msg := post("before"); code != http.StatusUnauthorized {
			return fmt.Errorf("before the Secret exists: %d %s, want 401", code, msg)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// The Secret, created after start: the manager watches it.
	if _, err := c.Kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: ingest.DefaultCredentialsSecret, Namespace: ns},
		StringData: map[string]string{ingest.CredentialsSecretKey: token + " name=olm detectors=olm-model\n"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	n := 0
	if err := (framework.Wait{What: "a signal accepted with the Secret's token", Timeout: 30 * time.Second, Logf: logf}).Until(ctx, func(context.Context) error {
		n++
		if code, msg := post(fmt.Sprintf("after-%d", n)); code != http.StatusAccepted {
			return fmt.Errorf("%d %s", code, msg)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\nmanager log:\n%s", err, mgr.Logs(3000))
	}
	logf("REPORT signal accepted %s after the Secret was created, with the CSV's arguments", time.Since(t0).Round(time.Millisecond))

	// Revoking is as quick: delete the Secret.
	if err := c.Kube.CoreV1().Secrets(ns).Delete(ctx, ingest.DefaultCredentialsSecret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := (framework.Wait{What: "the token revoked with the Secret", Timeout: 30 * time.Second, Logf: logf}).Until(ctx, func(context.Context) error {
		if code, msg := post("revoked"); code != http.StatusUnauthorized {
			return fmt.Errorf("%d %s", code, msg)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}
