//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/ingest"
)

// The manager (a process under its own ServiceAccount) serves a pod's live
// score from its memory to a token allowed to get quarantines in the pod's
// namespace, and refuses others: the streak after one signal, 403 for a
// namespace the token may not read, 401 without a token.
func TestExplainLiveScoresFromManager(t *testing.T) {
	s := newScenario(t)
	other := newScenario(t)
	pods := s.deployShop(1, "")
	target := pods[0].Name
	policy := "e2e-explain-" + s.ns[len(s.ns)-6:]
	s.applyPolicy(policy, s.policyYAML(policy, securityv1alpha1.ModeDryRun))
	s.waitPolicyReady(policy)
	s.postScore(target, 0.9)

	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "viewer"}}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "viewer"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{securityv1alpha1.GroupVersion.Group}, Resources: []string{"quarantines"}, Verbs: []string{"get"}}}}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "viewer"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "viewer"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: s.ns, Name: "viewer"}}}
	if err := s.c.Create(env.ctx, sa); err != nil {
		t.Fatal(err)
	}
	if err := s.c.Create(env.ctx, role); err != nil {
		t.Fatal(err)
	}
	if err := s.c.Create(env.ctx, rb); err != nil {
		t.Fatal(err)
	}
	tr := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}
	if err := s.c.SubResource("token").Create(env.ctx, sa, tr); err != nil {
		t.Fatal(err)
	}

	get := func(ctx context.Context, ns, pod, token string) (int, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, env.manager.Ingest.URL+ingest.ExplainPath+ns+"/"+pod, nil)
		if err != nil {
			return 0, nil, err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer func() { _ = resp.Body.Close() }()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, body, err
	}
	code, body, err := get(env.ctx, s.ns, target, tr.Status.Token)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET explain as the viewer: %d %s %v", code, body, err)
	}
	var x detection.Explanation
	if err := json.Unmarshal(body, &x); err != nil {
		t.Fatal(err)
	}
	var ps *detection.PolicyScore
	for i := range x.Policies {
		if x.Policies[i].Name == policy {
			ps = &x.Policies[i]
		}
	}
	if len(x.Detectors) != 1 || x.Detectors[0].Name != externalDetector || x.Detectors[0].Score != "0.9" {
		t.Fatalf("detectors %+v, want %s at 0.9", x.Detectors, externalDetector)
	}
	if ps == nil || ps.Score != "0.9" || ps.Streak != 1 || ps.Sustain != 2 || len(ps.Steps) != 1 || !ps.Steps[0].Reached {
		t.Fatalf("policy %s: %+v, want 0.9 with a streak of 1 of 2 and its step reached", policy, ps)
	}
	if code, body, err := get(env.ctx, other.ns, target, tr.Status.Token); err != nil || code != http.StatusForbidden {
		t.Fatalf("GET explain in another namespace: %d %s %v, want 403", code, body, err)
	}
	if code, body, err := get(env.ctx, s.ns, target, ""); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("GET explain without a token: %d %s %v, want 401", code, body, err)
	}
}
