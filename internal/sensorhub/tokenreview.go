// Package sensorhub is the manager's side of the node sensors: it
// authenticates a sensor by its projected ServiceAccount token (TokenReview,
// audience-bound, no shared secret), holds each sensor to its own node, and
// keeps what they report (heartbeats, BPF coverage, kernel enforcement) for
// metrics, policy conditions and Quarantine status.
package sensorhub

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create

// NodeNameExtra is the claim a pod-bound ServiceAccount token carries for
// the node its pod runs on (Kubernetes ≥ 1.32).
const NodeNameExtra = "authentication.kubernetes.io/node-name"

// Identity is an authenticated sensor.
type Identity struct {
	Username string
	// Node the token is bound to; empty for a token not bound to a pod
	// (a sensor run outside a pod), which may then speak for no node.
	Node string
}

// ErrUnauthenticated is a token the API server did not accept, for the
// wrong audience, or of another ServiceAccount.
var ErrUnauthenticated = errors.New("not a sensor token")

// TokenReviewer authenticates sensor tokens with the API server. Results
// are cached briefly by the token's hash so a heartbeat costs no API call.
type TokenReviewer struct {
	Client client.Client
	// Audience the token must be issued for.
	Audience string
	// Username allowed: system:serviceaccount:<manager namespace>:bulkhead-sensor.
	Username string
	TTL      time.Duration
	MaxCache int
	now      func() time.Time

	mu    sync.Mutex
	cache map[[sha256.Size]byte]cached
}

type cached struct {
	id      Identity
	err     error
	expires time.Time
}

// SensorUsername is the ServiceAccount user a sensor authenticates as.
func SensorUsername(namespace, serviceAccount string) string {
	return "system:serviceaccount:" + namespace + ":" + serviceAccount
}

// Review returns the token's identity, or ErrUnauthenticated.
func (r *TokenReviewer) Review(ctx context.Context, token string) (Identity, error) {
	if token == "" {
		return Identity{}, ErrUnauthenticated
	}
	now := time.Now
	if r.now != nil {
		now = r.now
	}
	key := sha256.Sum256([]byte(token))
	r.mu.Lock()
	if c, ok := r.cache[key]; ok && now().Before(c.expires) {
		r.mu.Unlock()
		return c.id, c.err
	}
	r.mu.Unlock()

	tr := &authnv1.TokenReview{
		ObjectMeta: metav1.ObjectMeta{},
		Spec:       authnv1.TokenReviewSpec{Token: token, Audiences: []string{r.Audience}},
	}
	if err := r.Client.Create(ctx, tr); err != nil {
		// Not cached: the API server being down is not the token's fault.
		return Identity{}, fmt.Errorf("token review: %w", err)
	}
	id, err := r.judge(tr)
	ttl := r.TTL
	if ttl <= 0 {
		ttl = time.Minute
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cache == nil {
		r.cache = map[[sha256.Size]byte]cached{}
	}
	max := r.MaxCache
	if max <= 0 {
		max = 10_000
	}
	if len(r.cache) >= max {
		// Bounded: start over rather than let forged tokens grow memory.
		clear(r.cache)
	}
	r.cache[key] = cached{id: id, err: err, expires: now().Add(ttl)}
	return id, err
}

func (r *TokenReviewer) judge(tr *authnv1.TokenReview) (Identity, error) {
	st := tr.Status
	if !st.Authenticated {
		return Identity{}, ErrUnauthenticated
	}
	audOK := false
	for _, a := range st.Audiences {
		audOK = audOK || a == r.Audience
	}
	if !audOK || st.User.Username != r.Username {
		return Identity{}, ErrUnauthenticated
	}
	id := Identity{Username: st.User.Username}
	if v := st.User.Extra[NodeNameExtra]; len(v) == 1 {
		id.Node = v[0]
	}
	return id, nil
}
