package ingest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Errors of Viewers.Authorize.
var (
	ErrUnauthenticated = errors.New("token not accepted by the API server")
	ErrNotAllowed      = errors.New("not allowed to get quarantines in this namespace")
)

// DefaultViewerCacheTTL is how long a review is reused: a revoked token or
// role binding stops working within it.
const DefaultViewerCacheTTL = 10 * time.Second

// Viewers authenticates a Kubernetes user's bearer token (TokenReview, the
// API server's own audience: the token kubectl uses) and authorizes reading
// a namespace's live scores as the right to get quarantines there
// (SubjectAccessReview), so tenants see only their own namespaces. Reviews
// are cached briefly by the token's hash.
type Viewers struct {
	Client   client.Client
	TTL      time.Duration
	MaxCache int
	now      func() time.Time

	mu    sync.Mutex
	users map[[sha256.Size]byte]cachedUser
	// decisions by token hash and namespace.
	decisions map[viewerKey]cachedDecision
}

type viewerKey struct {
	token     [sha256.Size]byte
	namespace string
}

type cachedUser struct {
	user    authnv1.UserInfo
	err     error
	expires time.Time
}

type cachedDecision struct {
	allowed bool
	expires time.Time
}

// Authorize returns the token's user name if it may read namespace's live
// scores; ErrUnauthenticated or ErrNotAllowed when not, another error when
// the API server could not answer.
func (v *Viewers) Authorize(ctx context.Context, token, namespace string) (string, error) {
	if token == "" {
		return "", ErrUnauthenticated
	}
	key := sha256.Sum256([]byte(token))
	user, err := v.review(ctx, key, token)
	if err != nil {
		return "", err
	}
	allowed, err := v.access(ctx, viewerKey{key, namespace}, user)
	if err != nil {
		return "", err
	}
	if !allowed {
		return user.Username, ErrNotAllowed
	}
	return user.Username, nil
}

func (v *Viewers) clock() time.Time {
	if v.now != nil {
		return v.now()
	}
	return time.Now()
}

func (v *Viewers) ttl() time.Duration {
	if v.TTL > 0 {
		return v.TTL
	}
	return DefaultViewerCacheTTL
}

func (v *Viewers) review(ctx context.Context, key [sha256.Size]byte, token string) (authnv1.UserInfo, error) {
	v.mu.Lock()
	if c, ok := v.users[key]; ok && v.clock().Before(c.expires) {
		v.mu.Unlock()
		return c.user, c.err
	}
	v.mu.Unlock()
	tr := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}
	if err := v.Client.Create(ctx, tr); err != nil {
		// Not cached: the API server being down is not the token's fault.
		return authnv1.UserInfo{}, fmt.Errorf("token review: %w", err)
	}
	var err error
	if !tr.Status.Authenticated || tr.Status.User.Username == "" {
		err = ErrUnauthenticated
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.users == nil || len(v.users) >= v.maxCache() {
		// Bounded: start over rather than let forged tokens grow memory.
		v.users = map[[sha256.Size]byte]cachedUser{}
	}
	v.users[key] = cachedUser{user: tr.Status.User, err: err, expires: v.clock().Add(v.ttl())}
	return tr.Status.User, err
}

func (v *Viewers) maxCache() int {
	if v.MaxCache > 0 {
		return v.MaxCache
	}
	return 10_000
}

func (v *Viewers) access(ctx context.Context, key viewerKey, user authnv1.UserInfo) (bool, error) {
	v.mu.Lock()
	if c, ok := v.decisions[key]; ok && v.clock().Before(c.expires) {
		v.mu.Unlock()
		return c.allowed, nil
	}
	v.mu.Unlock()
	extra := map[string]authzv1.ExtraValue{}
	for k, val := range user.Extra {
		extra[k] = authzv1.ExtraValue(val)
	}
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra,
		ResourceAttributes: &authzv1.ResourceAttributes{
			Namespace: key.namespace, Verb: "get", Group: securityv1alpha1.GroupVersion.Group, Resource: "quarantines",
		},
	}}
	if err := v.Client.Create(ctx, sar); err != nil {
		return false, fmt.Errorf("subject access review: %w", err)
	}
	allowed := sar.Status.Allowed && !sar.Status.Denied
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.decisions == nil || len(v.decisions) >= v.maxCache() {
		v.decisions = map[viewerKey]cachedDecision{}
	}
	v.decisions[key] = cachedDecision{allowed: allowed, expires: v.clock().Add(v.ttl())}
	return allowed, nil
}
