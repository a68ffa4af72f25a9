package packaging

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/hack/packaging/internal/gen"
)

// TestGuardHoldsUnderNamespaceOverride (issue 14 item 5): a kustomize
// overlay that moves Bulkhead to another namespace (`namespace:` does not
// rewrite CEL) still gets a working guard: the manager's ServiceAccount in
// that namespace may write a policy's attribution, a tenant may not.
func TestGuardHoldsUnderNamespaceOverride(t *testing.T) {
	const ns = "secops"
	overlay := t.TempDir()
	base, err := filepath.Rel(overlay, filepath.Join(repoRoot(t), "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	k := fmt.Sprintf("resources:\n- %s\nnamespace: %s\n", base, ns)
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(k), 0o600); err != nil {
		t.Fatal(err)
	}
	_, objs, err := gen.Kustomize(overlay, ".")
	if err != nil {
		t.Fatal(err)
	}
	c, cfg := startAPIServerConfig(t)
	ctx := t.Context()
	for _, o := range objs {
		if o.Kind() == "ServiceMonitor" || o.Kind() == "PrometheusRule" {
			continue
		}
		apply(ctx, t, c, "config/default with namespace "+ns, o, "")
	}
	if t.Failed() {
		t.FailNow()
	}
	apply(ctx, t, c, "tenant", map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "shop"}}, "")
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "q-editor"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"security.bulkhead.dev"}, Resources: []string{"quarantines"}, Verbs: []string{"create"}}}}
	if err := c.Create(ctx, role); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "q-editor"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "q-editor"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "alice"}}}
	if err := c.Create(ctx, rb); err != nil {
		t.Fatal(err)
	}
	manager := impersonate(t, cfg, "system:serviceaccount:"+ns+":bulkhead-controller-manager", "system:serviceaccounts", "system:serviceaccounts:"+ns)
	tenant := impersonate(t, cfg, "alice")

	// Wait until the API server enforces the guard (the tenant is refused),
	// then the manager must be let through.
	n := 0
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		n++
		err := tenant.Create(ctx, policyQuarantine(fmt.Sprintf("forged-%d", n)))
		switch {
		case err == nil:
			return false, nil // not enforced yet
		case strings.Contains(err.Error(), "written only by the Bulkhead manager"):
			return true, nil
		default:
			return false, err
		}
	})
	if err != nil {
		t.Fatalf("the guard is not enforced for a tenant: %v", err)
	}
	if err := manager.Create(ctx, policyQuarantine("by-policy")); err != nil {
		t.Fatalf("the guard does not recognise the manager installed in %s: %v", ns, err)
	}
}

func policyQuarantine(name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "security.bulkhead.dev/v1alpha1", "kind": "Quarantine",
		"metadata": map[string]any{"namespace": "shop", "name": name,
			"annotations": map[string]any{"security.bulkhead.dev/created-by": "web"}},
		"spec": map[string]any{"target": map[string]any{"name": "web-0"}, "actions": []any{map[string]any{"type": "Isolate"}}},
	}}
}

func impersonate(t *testing.T, admin *rest.Config, user string, groups ...string) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(admin)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append([]string{"system:authenticated"}, groups...)}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
