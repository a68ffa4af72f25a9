package guardinstall

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/controller/quarantine"
	"github.com/bulkhead-dev/bulkhead/test/framework"
	"github.com/bulkhead-dev/bulkhead/test/framework/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	var err error
	if env, err = testenv.Start(testenv.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// as impersonates a ServiceAccount.
func as(t *testing.T, ns, name string) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":" + name,
		Groups: []string{"system:authenticated", "system:serviceaccounts", "system:serviceaccounts:" + ns}}
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := env.Client.Create(t.Context(), obj); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// bindManagerRole gives the ServiceAccount ns/name the manager's ClusterRole
// exactly as generated from the RBAC markers (config/rbac/role.yaml).
func bindManagerRole(t *testing.T, ns, name string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(data), "\n---\n")
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal([]byte(docs[0]), role); err != nil || role.Kind != "ClusterRole" {
		t.Fatalf("config/rbac/role.yaml does not start with the manager ClusterRole: %v", err)
	}
	role.ObjectMeta = metav1.ObjectMeta{Name: "test-manager-role-" + ns}
	create(t, role)
	create(t, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}}})
}

func guardInstalled(t *testing.T) bool {
	t.Helper()
	var ps admissionregistrationv1.ValidatingAdmissionPolicyList
	var bs admissionregistrationv1.ValidatingAdmissionPolicyBindingList
	if err := env.Client.List(t.Context(), &ps); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.List(t.Context(), &bs); err != nil {
		t.Fatal(err)
	}
	return quarantine.GuardInstalled(ps.Items, bs.Items)
}

func policyQuarantine(ns, name string) *securityv1alpha1.Quarantine {
	return &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Annotations: map[string]string{securityv1alpha1.CreatedByPolicyAnnotation: "web"}},
		Spec: securityv1alpha1.QuarantineSpec{
			Target:  securityv1alpha1.Target{Name: "web-0"},
			Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}},
		},
	}
}

// TestManagerInstallsGuard (issue 14 item 5): on a path that carries no
// guard (an OLM bundle), the manager installs both guards itself with only
// the RBAC its markers generate (patch of the six named objects), in a
// namespace other than bulkhead-system; the guard is then in force for a
// tenant and lets this manager write its attribution. A second start
// writes nothing; a change to an object the manager installed is undone;
// an object another install path made is left alone.
func TestManagerInstallsGuard(t *testing.T) {
	ctx := t.Context()
	const mgrNS, tenantNS = "ops-elsewhere", "shop"
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: mgrNS}})
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tenantNS}})
	bindManagerRole(t, mgrNS, "bulkhead-controller-manager")
	manager := as(t, mgrNS, "bulkhead-controller-manager")
	if guardInstalled(t) {
		t.Fatal("a guard is installed before the manager ran")
	}

	// Without the RBAC the install fails with a clear error and changes
	// nothing: the guard stays missing, so the controller keeps refusing
	// hand-made destructive actions (AdmissionGuardMissing).
	nobody := as(t, "default", "nobody")
	if _, err := (&Installer{Client: nobody, Reader: env.Client}).Ensure(ctx); err == nil || !apierrors.IsForbidden(err) {
		t.Fatalf("installing without RBAC: want Forbidden, got %v", err)
	}
	if guardInstalled(t) {
		t.Fatal("a guard appeared without RBAC")
	}

	in := &Installer{Client: manager, Reader: manager, Log: logr.Discard()}
	applied, err := in.Ensure(ctx)
	if err != nil {
		t.Fatalf("installing the guards with the manager's generated RBAC: %v", err)
	}
	want := []string{"ValidatingAdmissionPolicy/bulkhead-baseline-guard", "ValidatingAdmissionPolicy/bulkhead-quarantine-guard", "ValidatingAdmissionPolicy/bulkhead-sensor-guard",
		"ValidatingAdmissionPolicyBinding/bulkhead-baseline-guard", "ValidatingAdmissionPolicyBinding/bulkhead-quarantine-guard", "ValidatingAdmissionPolicyBinding/bulkhead-sensor-guard"}
	if !slices.Equal(applied, want) {
		t.Fatalf("applied %v, want %v", applied, want)
	}
	if !guardInstalled(t) {
		t.Fatal("the Quarantine controller does not see the installed guard")
	}

	// In force: a tenant allowed to create Quarantines cannot forge a
	// policy's; the manager, in its own namespace, can.
	tenantRole := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: tenantNS, Name: "quarantine-editor"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{securityv1alpha1.GroupVersion.Group}, Resources: []string{"quarantines"}, Verbs: []string{"create", "get"}}}}
	create(t, tenantRole)
	create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: tenantNS, Name: "quarantine-editor"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: tenantRole.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: tenantNS, Name: "ci"}}})
	tenant := as(t, tenantNS, "ci")
	w := framework.Wait{Timeout: 30 * time.Second, Every: 200 * time.Millisecond}
	n := 0
	err = w.Until(ctx, func(ctx context.Context) error {
		n++
		err := tenant.Create(ctx, policyQuarantine(tenantNS, fmt.Sprintf("forged-%d", n)))
		if err == nil {
			return fmt.Errorf("a tenant created a Quarantine attributed to a policy")
		}
		if !strings.Contains(err.Error(), "written only by the Bulkhead manager") {
			return framework.Permanent(err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the installed guard is not in force: %v", err)
	}
	if err := manager.Create(ctx, policyQuarantine(tenantNS, "by-policy")); err != nil {
		t.Fatalf("the guard refuses the manager installed in %s: %v", mgrNS, err)
	}

	// A second start writes nothing.
	before := resourceVersions(t)
	if _, err := in.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if after := resourceVersions(t); !slices.Equal(before, after) {
		t.Fatalf("a second start rewrote the guards: %v -> %v", before, after)
	}

	// Weakened by someone: the next start restores it.
	vap := &admissionregistrationv1.ValidatingAdmissionPolicy{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "bulkhead-quarantine-guard"}, vap); err != nil {
		t.Fatal(err)
	}
	ignore := admissionregistrationv1.Ignore
	vap.Spec.FailurePolicy = &ignore
	if err := env.Client.Update(ctx, vap); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "bulkhead-quarantine-guard"}, vap); err != nil {
		t.Fatal(err)
	}
	if *vap.Spec.FailurePolicy != admissionregistrationv1.Fail {
		t.Fatalf("failurePolicy %s not restored", *vap.Spec.FailurePolicy)
	}

	// Made by another install path (no installed-by label): left alone.
	b := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "bulkhead-sensor-guard"}, b); err != nil {
		t.Fatal(err)
	}
	delete(b.Labels, InstalledByLabel)
	b.Spec.ValidationActions = []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny, admissionregistrationv1.Audit}
	if err := env.Client.Update(ctx, b); err != nil {
		t.Fatal(err)
	}
	applied, err = in.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(applied, "ValidatingAdmissionPolicyBinding/bulkhead-sensor-guard") {
		t.Fatal("the manager rewrote a guard object another install path made")
	}
}

func resourceVersions(t *testing.T) []string {
	t.Helper()
	objs, err := Objects()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(objs))
	for _, o := range objs {
		have := o.DeepCopy()
		if err := env.Client.Get(t.Context(), client.ObjectKeyFromObject(o), have); err != nil {
			t.Fatal(err)
		}
		out = append(out, have.GetName()+"@"+have.GetResourceVersion())
	}
	return out
}
