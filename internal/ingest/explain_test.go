package ingest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
	"github.com/bulkhead-dev/bulkhead/test/framework/testenv"
)

// viewersFunc authorizes by a function.
type viewersFunc func(token, namespace string) (string, error)

func (f viewersFunc) Authorize(_ context.Context, token, namespace string) (string, error) {
	return f(token, namespace)
}

// explainSource answers for pods in "web" and counts calls.
type explainSource struct{ calls int }

func (s *explainSource) Explain(_ context.Context, key detection.PodKey) (*detection.Explanation, error) {
	s.calls++
	if key.Pod != "shop-1" {
		return nil, detection.ErrNoPod
	}
	return &detection.Explanation{Namespace: key.Namespace, Pod: key.Pod, Policies: []detection.PolicyScore{{Name: "web", Score: "0.9"}}}, nil
}

// TestExplainEndpoint: only a token allowed in the pod's namespace reads
// its live scores; refusals are counted and read nothing.
func TestExplainEndpoint(t *testing.T) {
	src := &explainSource{}
	viewers := viewersFunc(func(token, ns string) (string, error) {
		switch {
		case token != "alice-token":
			return "", ErrUnauthenticated
		case ns != "web":
			return "alice", ErrNotAllowed
		}
		return "alice", nil
	})
	h := NewHandler(Config{Auth: &Authenticator{}, Explain: &Explain{Viewers: viewers, Source: src}, AddressRate: -1})
	do := func(method, path, token string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	before := func(outcome string) float64 {
		return testutil.ToFloat64(metrics.ExplainRequests.WithLabelValues(outcome))
	}
	unauth, forbidden, served := before(ReasonUnauthorized), before(ReasonForbidden), before("served")

	for _, c := range []struct {
		name, method, path, token string
		want                      int
	}{
		{"no token", http.MethodGet, "/v1/explain/web/shop-1", "", http.StatusUnauthorized},
		{"bad token", http.MethodGet, "/v1/explain/web/shop-1", "forged", http.StatusUnauthorized},
		{"other namespace", http.MethodGet, "/v1/explain/db/shop-1", "alice-token", http.StatusForbidden},
		{"other namespace, no such pod: still 403", http.MethodGet, "/v1/explain/db/nope", "alice-token", http.StatusForbidden},
		{"bad name", http.MethodGet, "/v1/explain/Web_/shop-1", "alice-token", http.StatusBadRequest},
		{"post", http.MethodPost, "/v1/explain/web/shop-1", "alice-token", http.StatusMethodNotAllowed},
	} {
		if rec := do(c.method, c.path, c.token); rec.Code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, rec.Code, rec.Body, c.want)
		}
	}
	if src.calls != 0 {
		t.Fatalf("refused requests read the scores %d times", src.calls)
	}
	if got := before(ReasonUnauthorized) - unauth; got != 2 {
		t.Errorf("Unauthorized counted %v, want 2", got)
	}
	if got := before(ReasonForbidden) - forbidden; got != 2 {
		t.Errorf("Forbidden counted %v, want 2", got)
	}

	if rec := do(http.MethodGet, "/v1/explain/web/nope", "alice-token"); rec.Code != http.StatusNotFound {
		t.Errorf("unknown pod in an allowed namespace: %d, want 404", rec.Code)
	}
	rec := do(http.MethodGet, "/v1/explain/web/shop-1", "alice-token")
	if rec.Code != http.StatusOK {
		t.Fatalf("allowed: %d %s", rec.Code, rec.Body)
	}
	var x detection.Explanation
	if err := json.Unmarshal(rec.Body.Bytes(), &x); err != nil || x.Pod != "shop-1" || x.Policies[0].Score != "0.9" {
		t.Fatalf("body %s: %v", rec.Body, err)
	}
	if got := before("served") - served; got != 1 {
		t.Errorf("served counted %v, want 1", got)
	}

	// Without Explain configured the route does not exist.
	plain := NewHandler(Config{Auth: &Authenticator{}, AddressRate: -1})
	req := httptest.NewRequest(http.MethodGet, "/v1/explain/web/shop-1", nil)
	req.Header.Set("Authorization", "Bearer alice-token")
	rr := httptest.NewRecorder()
	plain.ServeHTTP(rr, req)
	if rr.Code != http.StatusNotFound {
		t.Fatalf("unconfigured: %d, want 404", rr.Code)
	}
}

// TestViewersCache: reviews are made once per token (and namespace) within
// the TTL, the SubjectAccessReview carries the user's identity and asks
// for get quarantines in the namespace, and a refusal is remembered too.
func TestViewersCache(t *testing.T) {
	var reviews, accesses int
	var asked authzv1.SubjectAccessReviewSpec
	c := fake.NewClientBuilder().WithScheme(testenv.Scheme).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(_ context.Context, _ client.WithWatch, obj client.Object, _ ...client.CreateOption) error {
			switch o := obj.(type) {
			case *authnv1.TokenReview:
				reviews++
				if o.Spec.Token == "alice-token" {
					o.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: "alice", Groups: []string{"dev"}}}
				}
			case *authzv1.SubjectAccessReview:
				accesses++
				asked = o.Spec
				o.Status.Allowed = o.Spec.ResourceAttributes.Namespace == "web"
			}
			return nil
		},
	}).Build()
	now := time.Unix(1000, 0)
	v := &Viewers{Client: c, now: func() time.Time { return now }}
	ctx := context.Background()
	for range 3 {
		if user, err := v.Authorize(ctx, "alice-token", "web"); err != nil || user != "alice" {
			t.Fatalf("web: %q %v", user, err)
		}
		if _, err := v.Authorize(ctx, "alice-token", "db"); err != ErrNotAllowed {
			t.Fatalf("db: %v, want ErrNotAllowed", err)
		}
		if _, err := v.Authorize(ctx, "forged", "web"); err != ErrUnauthenticated {
			t.Fatalf("forged: %v, want ErrUnauthenticated", err)
		}
	}
	if reviews != 2 || accesses != 2 {
		t.Fatalf("%d token reviews and %d access reviews, want 2 and 2 (cached)", reviews, accesses)
	}
	ra := asked.ResourceAttributes
	if asked.User != "alice" || len(asked.Groups) != 1 || ra.Verb != "get" || ra.Resource != "quarantines" || ra.Group != "security.bulkhead.dev" {
		t.Fatalf("access review asked %+v %+v", asked, ra)
	}
	now = now.Add(DefaultViewerCacheTTL + time.Second)
	if _, err := v.Authorize(ctx, "alice-token", "web"); err != nil || reviews != 3 || accesses != 3 {
		t.Fatalf("after the TTL: %v, %d/%d reviews, want asked again", err, reviews, accesses)
	}
}
