package install

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/test/framework"
)

const (
	managerUser = "system:serviceaccount:bulkhead-system:bulkhead-controller-manager"
	testNS      = "tenant"
)

// installOnce applies dist/install.yaml with server-side apply, as
// `kubectl apply --server-side -f dist/install.yaml` does.
func installOnce(t *testing.T) {
	t.Helper()
	installed.Do(func() {
		for _, u := range readObjects(t, repoPath("dist", "install.yaml")) {
			err := env.Client.Apply(ctx(t), client.ApplyConfigurationFromUnstructured(u),
				client.FieldOwner("install-test"), client.ForceOwnership)
			if err != nil {
				installErr = err
				t.Errorf("dist/install.yaml: applying %s %s: %v", u.GetKind(), u.GetName(), err)
			}
		}
		mustCreate(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}})
	})
	if installErr != nil {
		t.Fatalf("dist/install.yaml was not accepted: %v", installErr)
	}
}

func mustCreate(t *testing.T, obj client.Object) {
	t.Helper()
	if err := env.Client.Create(ctx(t), obj); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// TestInstallYAMLIsAccepted: every object of dist/install.yaml is accepted by
// the API server, and the shipped quarantine-guard policy is bound.
func TestInstallYAMLIsAccepted(t *testing.T) {
	installOnce(t)
	objs := readObjects(t, repoPath("dist", "install.yaml"))
	kinds := map[string]int{}
	for _, u := range objs {
		kinds[u.GetKind()]++
	}
	for _, k := range []string{"Namespace", "CustomResourceDefinition", "Deployment", "ServiceAccount", "ClusterRole",
		"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "NetworkPolicy", "Service"} {
		if kinds[k] == 0 {
			t.Errorf("dist/install.yaml has no %s", k)
		}
	}
}

// bind grants user the rules in a fresh ClusterRole, cluster-wide.
func bind(t *testing.T, user, name string, rules ...rbacv1.PolicyRule) {
	t.Helper()
	mustCreate(t, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules})
	bindRole(t, user, name)
}

// bindRole binds an existing ClusterRole to user cluster-wide.
func bindRole(t *testing.T, user, role string) {
	t.Helper()
	mustCreate(t, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role + "-" + strings.ReplaceAll(user, ":", "-")},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}},
	})
}

var editQuarantines = rbacv1.PolicyRule{
	APIGroups: []string{securityv1alpha1.GroupVersion.Group},
	Resources: []string{"quarantines"},
	Verbs:     []string{"get", "list", "watch", "create", "update", "patch", "delete"},
}

func quarantine(name string, actions ...securityv1alpha1.ActionType) *securityv1alpha1.Quarantine {
	q := framework.Quarantine(testNS, name, "shop-1")
	for _, a := range actions {
		q.Spec.Actions = append(q.Spec.Actions, securityv1alpha1.Action{Type: a})
	}
	return q
}

// waitForPolicy retries a request the policy must deny until the API server
// has loaded the policy and its binding (they are read from an informer).
func waitForPolicy(t *testing.T) {
	t.Helper()
	bind(t, "probe", "probe-quarantines", editQuarantines)
	c := as(t, "probe")
	q := quarantine("probe", securityv1alpha1.ActionIsolate)
	q.Annotations = map[string]string{securityv1alpha1.ActorAnnotation: "someone-else"}
	var last error
	err := wait.PollUntilContextTimeout(ctx(t), 200*time.Millisecond, 30*time.Second, true, func(ctx2 context.Context) (bool, error) {
		err := c.Create(ctx2, q.DeepCopy())
		last = err
		if err == nil {
			_ = env.Client.Delete(ctx2, q.DeepCopy())
			return false, nil
		}
		// Only the guard's own message counts: RBAC refuses too until the
		// probe's fresh binding is seen.
		return (apierrors.IsInvalid(err) || apierrors.IsForbidden(err)) && strings.Contains(err.Error(), "must be your own user name"), nil
	})
	if err != nil {
		t.Fatalf("the quarantine-guard policy never took effect (last answer: %v): %v", last, err)
	}
}

func TestQuarantineGuard(t *testing.T) {
	installOnce(t)
	waitForPolicy(t)

	// alice may write Quarantines but holds no custom verbs and no rights on
	// nodes or workloads; bob is a responder; carol is a responder who may also
	// cordon nodes, scale workloads and evict pods herself.
	bind(t, "alice", "alice-quarantines", editQuarantines)
	bindRole(t, "bob", "bulkhead-responder")
	bindRole(t, "carol", "bulkhead-responder")
	bind(t, "carol", "carol-workloads",
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"patch"}},
		rbacv1.PolicyRule{APIGroups: []string{"apps"}, Resources: []string{"deployments/scale", "statefulsets/scale", "replicasets/scale"}, Verbs: []string{"patch"}},
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods/eviction"}, Verbs: []string{"create"}},
	)
	bindRole(t, "dave", "bulkhead-responder")
	bind(t, "dave", "dave-workloads",
		rbacv1.PolicyRule{APIGroups: []string{"apps"}, Resources: []string{"deployments/scale", "statefulsets/scale"}, Verbs: []string{"patch"}})
	alice, bob, carol, dave := as(t, "alice"), as(t, "bob"), as(t, "carol"), as(t, "dave")
	// The manager holds no custom verbs; what it may write is up to its
	// generated role, so this test grants plain write access itself and proves
	// only that the policy exempts the manager.
	bind(t, managerUser, "manager-writes-quarantines", editQuarantines)
	manager := as(t, managerUser, "system:serviceaccounts", "system:serviceaccounts:bulkhead-system")

	// Each case runs in order on its own Quarantine.
	type step struct {
		name    string
		run     func() error
		allowed bool
		message string // part of the denial message
	}
	get := func(name string) *securityv1alpha1.Quarantine {
		q := &securityv1alpha1.Quarantine{}
		if err := env.Client.Get(ctx(t), client.ObjectKey{Namespace: testNS, Name: name}, q); err != nil {
			t.Fatalf("get %s: %v", name, err)
		}
		return q
	}
	setApproved := func(c client.Client, name string) func() error {
		return func() error {
			q := get(name)
			patch := client.MergeFrom(q.DeepCopy())
			q.Spec.Approved = ptr.To(true)
			return c.Patch(ctx(t), q, patch)
		}
	}
	setReleased := func(c client.Client, name string) func() error {
		return func() error {
			q := get(name)
			patch := client.MergeFrom(q.DeepCopy())
			q.Spec.Released = ptr.To(true)
			return c.Patch(ctx(t), q, patch)
		}
	}
	addAction := func(c client.Client, name string, a securityv1alpha1.ActionType) func() error {
		return func() error {
			q := get(name)
			patch := client.MergeFrom(q.DeepCopy())
			q.Spec.Actions = append(q.Spec.Actions, securityv1alpha1.Action{Type: a})
			return c.Patch(ctx(t), q, patch)
		}
	}
	del := func(c client.Client, name string) func() error {
		return func() error { return c.Delete(ctx(t), quarantine(name)) }
	}
	create := func(c client.Client, q *securityv1alpha1.Quarantine) func() error {
		return func() error { return c.Create(ctx(t), q) }
	}
	unapproved := func(name string) *securityv1alpha1.Quarantine {
		q := quarantine(name, securityv1alpha1.ActionIsolate)
		q.Spec.Approved = ptr.To(false)
		return q
	}
	withActor := func(q *securityv1alpha1.Quarantine, actor string) *securityv1alpha1.Quarantine {
		q.Annotations = map[string]string{securityv1alpha1.ActorAnnotation: actor}
		return q
	}
	onDeployment := func(q *securityv1alpha1.Quarantine) *securityv1alpha1.Quarantine {
		q.Spec.Target.Kind = securityv1alpha1.TargetDeployment
		return q
	}

	steps := []step{
		{"alice creates an Isolate-only Quarantine", create(alice, quarantine("iso", securityv1alpha1.ActionIsolate)), true, ""},
		{"alice creates an unapproved one", create(alice, unapproved("wait")), true, ""},
		{"alice cannot approve without the approve verb", setApproved(alice, "wait"), false, "needs the verb approve"},
		{"bob (responder) approves", setApproved(bob, "wait"), true, ""},
		{"alice cannot release without the release verb", setReleased(alice, "iso"), false, "needs the verb release"},
		{"alice cannot delete (release) without the release verb", del(alice, "iso"), false, "needs the verb release"},
		{"bob releases by spec.released", setReleased(bob, "iso"), true, ""},
		{"bob deletes", del(bob, "iso"), true, ""},

		{"bob cannot ask for CordonNode without patching nodes himself", create(bob, quarantine("cordon", securityv1alpha1.ActionIsolate, securityv1alpha1.ActionCordonNode)), false, "allowed to patch nodes"},
		{"carol can ask for CordonNode", create(carol, quarantine("cordon", securityv1alpha1.ActionIsolate, securityv1alpha1.ActionCordonNode)), true, ""},
		{"bob cannot ScaleToZero a Deployment", create(bob, onDeployment(quarantine("scale-d", securityv1alpha1.ActionScaleToZero))), false, "patch deployments/scale"},
		{"carol can ScaleToZero a Deployment", create(carol, onDeployment(quarantine("scale-d", securityv1alpha1.ActionScaleToZero))), true, ""},
		{"bob cannot ScaleToZero a Pod's owner", create(bob, quarantine("scale-p", securityv1alpha1.ActionScaleToZero)), false, "patch deployments/scale"},
		{"dave cannot ScaleToZero a Pod's owner without replicasets/scale", create(dave, quarantine("scale-p", securityv1alpha1.ActionScaleToZero)), false, "patch replicasets/scale"},
		{"dave can ScaleToZero a StatefulSet", create(dave, func() *securityv1alpha1.Quarantine {
			q := quarantine("scale-s", securityv1alpha1.ActionScaleToZero)
			q.Spec.Target.Kind = securityv1alpha1.TargetStatefulSet
			return q
		}()), true, ""},
		{"carol can ScaleToZero a Pod's owner", create(carol, quarantine("scale-p", securityv1alpha1.ActionScaleToZero)), true, ""},
		{"bob cannot Evict", create(bob, quarantine("evict", securityv1alpha1.ActionEvict)), false, "pods/eviction"},
		{"carol can Evict", create(carol, quarantine("evict", securityv1alpha1.ActionEvict)), true, ""},
		{"bob creates an Isolate-only one", create(bob, quarantine("grow", securityv1alpha1.ActionIsolate)), true, ""},
		{"bob cannot add CordonNode to it later", addAction(bob, "grow", securityv1alpha1.ActionCordonNode), false, "allowed to patch nodes"},
		{"carol can add CordonNode to it", addAction(carol, "grow", securityv1alpha1.ActionCordonNode), true, ""},

		{"bob cannot write another user as actor", create(bob, withActor(quarantine("actor", securityv1alpha1.ActionIsolate), "carol")), false, "must be your own user name"},
		{"bob may name himself as actor", create(bob, withActor(quarantine("actor", securityv1alpha1.ActionIsolate), "bob")), true, ""},
		{"carol cannot change it while bob's name stays", setReleased(carol, "actor"), false, "must be your own user name"},

		{"the manager creates unapproved with CordonNode", create(manager, func() *securityv1alpha1.Quarantine {
			q := unapproved("by-manager")
			q.Spec.Actions = append(q.Spec.Actions, securityv1alpha1.Action{Type: securityv1alpha1.ActionCordonNode})
			return withActor(q, "bulkhead/threatpolicy")
		}()), true, ""},
		{"the manager approves and releases without custom verbs", func() error {
			if err := setApproved(manager, "by-manager")(); err != nil {
				return err
			}
			return setReleased(manager, "by-manager")()
		}, true, ""},
		{"the manager deletes", del(manager, "by-manager"), true, ""},
		// A collection delete carries no request name; the policy must still
		// evaluate (it once failed with "no such key: name" for everyone).
		{"an admin deletes every Quarantine at once", func() error {
			return env.Client.DeleteAllOf(ctx(t), &securityv1alpha1.Quarantine{}, client.InNamespace(testNS))
		}, true, ""},
	}
	for _, s := range steps {
		err := s.run()
		switch {
		case s.allowed && err != nil:
			t.Errorf("%s: denied: %v", s.name, err)
		case !s.allowed && err == nil:
			t.Errorf("%s: allowed, want denied", s.name)
		case !s.allowed && !strings.Contains(err.Error(), s.message):
			t.Errorf("%s: denied for the wrong reason (want %q): %v", s.name, s.message, err)
		}
	}
}
