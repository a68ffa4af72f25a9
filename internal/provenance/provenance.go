// Package provenance tells the Quarantines the manager made for its
// policies from ones anyone else made. The created-by annotation alone can
// be written by any user allowed to create Quarantines (the admission guard
// refuses it, but the guard may be missing); budgets, the cluster cap and
// the admission-guard check must not trust it. The manager signs what it
// creates with an HMAC key kept in a Secret in its own namespace, which
// tenants cannot read.
package provenance

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// Annotation holds the signature of a Quarantine the manager made.
const Annotation = "security.bulkhead.dev/provenance"

// SecretName is the Secret in the manager namespace holding the key.
const SecretName = "bulkhead-provenance"

const keyField = "key"

// minKey is the shortest key accepted (bytes).
const minKey = 32

// Signer signs and verifies the manager's Quarantines.
type Signer struct{ key []byte }

// New makes a Signer from a key of at least 32 bytes.
func New(key []byte) (*Signer, error) {
	if len(key) < minKey {
		return nil, fmt.Errorf("provenance key is %d bytes, needs at least %d", len(key), minKey)
	}
	return &Signer{key: append([]byte(nil), key...)}, nil
}

// Sign returns the signature of q: namespace, name, target and the policy
// that created it. A copy of a signature only fits a Quarantine of the same
// name for the same pod and policy, which is the one the manager made.
func (s *Signer) Sign(q *securityv1alpha1.Quarantine) string {
	m := hmac.New(sha256.New, s.key)
	policy := q.Annotations[securityv1alpha1.CreatedByPolicyAnnotation]
	for _, part := range []string{"v1", q.Namespace, q.Name, string(q.Spec.Target.Kind), q.Spec.Target.Name, policy} {
		m.Write([]byte(part))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil))
}

// Made reports whether the manager made q for its policies: it carries the
// created-by annotation and a valid signature. A nil Signer trusts nothing.
func (s *Signer) Made(q *securityv1alpha1.Quarantine) bool {
	if s == nil || q.Annotations[securityv1alpha1.CreatedByPolicyAnnotation] == "" {
		return false
	}
	got, err := hex.DecodeString(q.Annotations[Annotation])
	if err != nil {
		return false
	}
	want, _ := hex.DecodeString(s.Sign(q))
	return hmac.Equal(got, want)
}

// Keyring loads the key on first use, from the Secret in Namespace,
// creating it with a random key the first time; two replicas starting
// together agree (the loser of the create reads the winner's key). A failed
// load is retried on the next use.
type Keyring struct {
	// Reader reads the Secret uncached (the manager watches no Secrets).
	Reader client.Reader
	// Writer creates it.
	Writer    client.Writer
	Namespace string

	mu     sync.Mutex
	signer *Signer
}

// +kubebuilder:rbac:groups="",namespace=bulkhead-system,resources=secrets,verbs=get;create

// Fixed is a Keyring with a known key (tests).
func Fixed(s *Signer) *Keyring { return &Keyring{signer: s} }

// Signer returns the signer, loading the key the first time.
func (k *Keyring) Signer(ctx context.Context) (*Signer, error) {
	if k == nil {
		return nil, errors.New("provenance: no keyring")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.signer != nil {
		return k.signer, nil
	}
	if k.Reader == nil || k.Writer == nil {
		return nil, errors.New("provenance: no key and no client to load it")
	}
	s, err := load(ctx, k.Reader, k.Writer, k.Namespace)
	if err != nil {
		return nil, err
	}
	k.signer = s
	return s, nil
}

func load(ctx context.Context, r client.Reader, w client.Writer, namespace string) (*Signer, error) {
	key := client.ObjectKey{Namespace: namespace, Name: SecretName}
	for range 3 {
		sec := &corev1.Secret{}
		err := r.Get(ctx, key, sec)
		if err == nil {
			return New(sec.Data[keyField])
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("reading Secret %s: %w", key, err)
		}
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		sec = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: SecretName,
				Labels: map[string]string{securityv1alpha1.ManagedByLabel: securityv1alpha1.ManagedByValue}},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{keyField: k},
		}
		switch err := w.Create(ctx, sec, client.FieldOwner(securityv1alpha1.FieldManager)); {
		case err == nil:
			return New(k)
		case !apierrors.IsAlreadyExists(err):
			return nil, fmt.Errorf("creating Secret %s: %w", key, err)
		}
	}
	return nil, errors.New("provenance key: Secret " + key.String() + " keeps changing")
}
