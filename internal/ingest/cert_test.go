package ingest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// issue makes a certificate signed by parent (self-signed when parent is nil).
func issue(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, ca bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	if ca {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func TestClientCertificateOverTLS(t *testing.T) {
	ca, caKey := issue(t, "ingest-ca", nil, nil, true)
	bound, boundKey := issue(t, "falco-client", ca, caKey, false)
	unknown, unknownKey := issue(t, "stranger", ca, caKey, false)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Config{}, true)
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: f.h, ClientCAFile: caFile}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	post := func(cert *x509.Certificate, key *ecdsa.PrivateKey) int {
		t.Helper()
		tc := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the server's certificate is self-signed for the test
		if cert != nil {
			tc.Certificates = []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
		resp, err := c.Post("https://"+ln.Addr().String()+"/v1/falco", "application/json",
			strings.NewReader(string(sample(t, "docs-channels-critical-terminal-shell.json"))))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(bound, boundKey); code != http.StatusAccepted {
		t.Errorf("bound client certificate: %d", code)
	}
	if code := post(unknown, unknownKey); code != http.StatusUnauthorized {
		t.Errorf("certificate not in the credentials file: %d", code)
	}
	if code := post(nil, nil); code != http.StatusUnauthorized {
		t.Errorf("no credential: %d", code)
	}
	if f.sink.count() != 1 {
		t.Errorf("recorded %d signals, want 1", f.sink.count())
	}
}

// serve runs srv on a local port until the test ends and returns its address.
func serve(t *testing.T, srv *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return ln.Addr().String()
}

func TestInsecureServesPlainHTTP(t *testing.T) {
	f := newFixture(t, Config{}, true)
	addr := serve(t, &Server{Handler: f.h, Insecure: true})
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/scores", strings.NewReader(score("web", "shop-1", "my-model", 0.5, "")))
	req.Header.Set("Authorization", "Bearer ext-token")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("plain HTTP with --ingest-insecure: %d", resp.StatusCode)
	}
}

func TestServingCertificateFromFiles(t *testing.T) {
	ca, caKey := issue(t, "ingest-ca", nil, nil, true)
	leaf, leafKey := issue(t, "bulkhead-ingest", ca, caKey, false)
	dir := t.TempDir()
	keyDER, err := x509.MarshalECPrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Config{}, true)
	addr := serve(t, &Server{Handler: f.h, CertFile: certFile, KeyFile: keyFile})
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test compares the certificate itself
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if got := conn.ConnectionState().PeerCertificates[0]; !got.Equal(leaf) {
		t.Errorf("served %s, want the certificate from %s", got.Subject.CommonName, certFile)
	}
}
