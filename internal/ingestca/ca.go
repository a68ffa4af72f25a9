// Package ingestca gives ingestion a stable serving certificate without
// cert-manager: a CA kept in a Secret in the manager namespace (created once,
// never replaced, shared by every replica), a serving certificate signed by
// it at each start for the ingest Service's names, and the CA certificate
// published in a ConfigMap so sensors and other clients verify the manager
// instead of skipping verification.
package ingestca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// +kubebuilder:rbac:groups="",namespace=bulkhead-system,resources=secrets,verbs=get;create
// +kubebuilder:rbac:groups="",namespace=bulkhead-system,resources=configmaps,verbs=get;create;update

// Names of the objects it keeps in the manager namespace.
const (
	SecretName    = "bulkhead-ingest-ca"
	ConfigMapName = "bulkhead-ingest-ca"
	CertKey       = "ca.crt"
	keyKey        = "ca.key"
	// ServiceName is the ingest Service as installed (namePrefix bulkhead-).
	ServiceName = "bulkhead-ingest"
)

// CA is the loaded signing pair.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     *ecdsa.PrivateKey
}

// Ensure loads the CA Secret, creating it when absent (a replica that loses
// the create race reads the winner's), and publishes its certificate.
func Ensure(ctx context.Context, c client.Client, namespace string) (*CA, error) {
	var sec corev1.Secret
	key := client.ObjectKey{Namespace: namespace, Name: SecretName}
	err := c.Get(ctx, key, &sec)
	if apierrors.IsNotFound(err) {
		certPEM, keyPEM, gerr := newCA()
		if gerr != nil {
			return nil, gerr
		}
		sec = corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: SecretName, Labels: map[string]string{
				securityv1alpha1.ManagedByLabel: securityv1alpha1.ManagedByValue}},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{CertKey: certPEM, keyKey: keyPEM},
		}
		err = c.Create(ctx, &sec)
		if apierrors.IsAlreadyExists(err) {
			err = c.Get(ctx, key, &sec)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ingest CA secret %s/%s: %w", namespace, SecretName, err)
	}
	ca, err := parse(sec.Data[CertKey], sec.Data[keyKey])
	if err != nil {
		return nil, fmt.Errorf("ingest CA secret %s/%s: %w (delete it to have a new CA made)", namespace, SecretName, err)
	}
	return ca, publish(ctx, c, namespace, ca.CertPEM)
}

func publish(ctx context.Context, c client.Client, namespace string, certPEM []byte) error {
	var cm corev1.ConfigMap
	key := client.ObjectKey{Namespace: namespace, Name: ConfigMapName}
	err := c.Get(ctx, key, &cm)
	if apierrors.IsNotFound(err) {
		cm = corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: ConfigMapName, Labels: map[string]string{
				securityv1alpha1.ManagedByLabel: securityv1alpha1.ManagedByValue}},
			Data: map[string]string{CertKey: string(certPEM)},
		}
		if err = c.Create(ctx, &cm); apierrors.IsAlreadyExists(err) {
			return publish(ctx, c, namespace, certPEM)
		}
		return err
	}
	if err != nil {
		return err
	}
	if cm.Data[CertKey] == string(certPEM) {
		return nil
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[CertKey] = string(certPEM)
	return c.Update(ctx, &cm)
}

func newCA() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "bulkhead-ingest-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

func parse(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("ca.crt or ca.key is not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("not a CA, or the key does not match the certificate")
	}
	return &CA{Cert: cert, CertPEM: certPEM, key: key}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

// DNSNames are the names the ingest Service answers to in namespace.
func DNSNames(namespace string) []string {
	return []string{
		ServiceName, ServiceName + "." + namespace, ServiceName + "." + namespace + ".svc",
		ServiceName + "." + namespace + ".svc.cluster.local", "localhost",
	}
}

// Serving signs a fresh serving certificate (valid a year; a restart renews
// it) for names and the loopback addresses.
func (ca *CA) Serving(names []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		IPAddresses:  loopback,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key}, nil
}
