package ingestca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/test/framework/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	e, err := testenv.Start(testenv.Options{})
	if err != nil {
		panic(err)
	}
	env = e
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// Two replicas (two Ensure calls) share one CA; a client trusting only the
// published ConfigMap verifies the serving certificate by its Service name;
// a restart keeps the CA; a corrupt Secret is an error, never replaced.
func TestStableCA(t *testing.T) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "ca-"}}
	if err := env.Client.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	a, err := Ensure(ctx, env.Client, ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Ensure(ctx, env.Client, ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Cert.Equal(b.Cert) {
		t.Fatal("second replica made another CA")
	}
	var cm corev1.ConfigMap
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: ConfigMapName}, &cm); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cm.Data[CertKey])) {
		t.Fatal("published CA is not PEM")
	}
	serving, err := b.Serving(DNSNames(ns.Name))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{serving}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) })}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	host := ServiceName + "." + ns.Name + ".svc"
	cl := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, ln.Addr().String())
		},
	}}
	resp, err := cl.Get("https://" + host + "/")
	if err != nil {
		t.Fatalf("client trusting the published CA: %v", err)
	}
	_ = resp.Body.Close()
	// A client with another root refuses it.
	other := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: x509.NewCertPool(), ServerName: host},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, ln.Addr().String())
		}}}
	if _, err := other.Get("https://" + host + "/"); err == nil {
		t.Fatal("an untrusted client accepted the certificate")
	}
	// Corrupt the Secret: Ensure fails and leaves it for a human.
	var sec corev1.Secret
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: SecretName}, &sec); err != nil {
		t.Fatal(err)
	}
	sec.Data[keyKey] = []byte("garbage")
	if err := env.Client.Update(ctx, &sec); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(ctx, env.Client, ns.Name); err == nil {
		t.Fatal("corrupt CA accepted")
	}
}
