package plugin

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/test/framework/testenv"
)

// load reads the YAML documents of a shipped manifest.
func load(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), path))
	if err != nil {
		t.Fatal(err)
	}
	var out []*unstructured.Unstructured
	for doc := range bytes.SplitSeq(data, []byte("\n---\n")) {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
	return out
}

// TestResponderThroughAdmission runs the plugin as a least-privileged
// responder against the shipped quarantine-guard ValidatingAdmissionPolicy
// and roles: the actor annotation the plugin writes must satisfy the guard.
func TestResponderThroughAdmission(t *testing.T) {
	ctx := context.Background()
	const label = "bulkhead.test/admission"
	ns := namespace(t, map[string]string{label: "true"})
	mgr := namespace(t, nil)

	for _, u := range load(t, "config/admission/quarantine_guard.yaml") {
		u.SetName(u.GetName() + "-" + ns)
		if u.GetKind() == "ValidatingAdmissionPolicyBinding" {
			// Confine the shipped binding to this test's namespace so the
			// other tests' fixtures are not judged by it.
			if err := unstructured.SetNestedField(u.Object, u.GetName(), "spec", "policyName"); err != nil {
				t.Fatal(err)
			}
			if err := unstructured.SetNestedStringMap(u.Object, map[string]string{label: "true"}, "spec", "matchResources", "namespaceSelector", "matchLabels"); err != nil {
				t.Fatal(err)
			}
		}
		if err := admin.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = admin.Delete(ctx, u) })
	}
	for _, u := range load(t, "config/rbac/responder_role.yaml") {
		u.SetName(u.GetName() + "-" + ns)
		if err := admin.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
		bind(t, ns, "ClusterRole", u.GetName())
	}
	for _, u := range load(t, "config/rbac/control_editor_role.yaml") {
		u.SetNamespace(mgr)
		if err := admin.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
		bind(t, mgr, "Role", u.GetName())
	}

	bob, err := env.AddUser(envtest.User{Name: "bob"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := bob.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	bobConfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(bobConfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	bobClient, err := client.New(bob.Config(), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}

	quarantine(t, ns, "probe", "probe", nil)
	quarantine(t, ns, "waiting", "waiting", func(q *securityv1alpha1.Quarantine) { q.Spec.Approved = ptr.To(false) })

	// The policy is enforced once the API server has loaded it: wait until
	// bob cannot claim to be someone else.
	forged := []byte(`{"metadata":{"annotations":{"` + securityv1alpha1.ActorAnnotation + `":"mallory"}}}`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := bobClient.Patch(ctx, &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe"}},
			client.RawPatch(types.MergePatchType, forged))
		if apierrors.IsForbidden(err) && strings.Contains(err.Error(), "must be your own user name") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("quarantine-guard not enforced after 30s (last result: %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	if out, errOut, err := runAs(t, bobConfig, "", "approve", "waiting", "-n", ns); err != nil {
		t.Fatalf("approve as responder: %v\n%s%s", err, out, errOut)
	}
	if out, errOut, err := runAs(t, bobConfig, "", "release", "waiting", "-n", ns); err != nil {
		t.Fatalf("release as responder: %v\n%s%s", err, out, errOut)
	}
	q := get(t, ns, "waiting")
	if !q.IsApproved() || !q.IsReleased() || q.Annotations[securityv1alpha1.ActorAnnotation] != "bob" {
		t.Errorf("approved %v, released %v, actor %q", q.IsApproved(), q.IsReleased(), q.Annotations[securityv1alpha1.ActorAnnotation])
	}

	// A namespace-bound user cannot list cluster-scoped ThreatPolicies;
	// explain still shows what it can.
	bind(t, ns, "ClusterRole", "view")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "waiting", Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx:1.27"}}},
	}
	if err := admin.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := runAs(t, bobConfig, "", "explain", "waiting", "-n", ns, "--manager-namespace", mgr)
	if err != nil {
		t.Fatalf("explain as a namespace-bound user: %v\n%s%s", err, out, errOut)
	}
	if !strings.Contains(out, "Policies covering this pod: unknown (") || !strings.Contains(out, "forbidden") {
		t.Errorf("explain without access to ThreatPolicies:\n%s", out)
	}
	row(t, section(out, "Quarantines of this pod:"), "waiting", "<none>", "score", "0.97", "approved", "yes", "released", "yes")

	if out, errOut, err := runAs(t, bobConfig, "", "pause", "--manager-namespace", mgr); err != nil {
		t.Fatalf("pause with the control-editor role: %v\n%s%s", err, out, errOut)
	}
	if out, errOut, err := runAs(t, bobConfig, "", "resume", "--manager-namespace", mgr); err != nil {
		t.Fatalf("resume with the control-editor role: %v\n%s%s", err, out, errOut)
	}
}

func bind(t *testing.T, ns, kind, name string) {
	t.Helper()
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kind, Name: name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "bob"}},
	}
	if err := admin.Create(context.Background(), rb); err != nil {
		t.Fatal(err)
	}
}
