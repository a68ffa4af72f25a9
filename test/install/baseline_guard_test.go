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
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Issue 14 (low): someone with control-editor rights (create ConfigMaps in
// the manager namespace, for the pause switch) cannot plant a behavior
// baseline that the model would trust; the manager and the sensors still
// write theirs.
func TestControlEditorCannotPlantBaseline(t *testing.T) {
	installOnce(t)
	ns := "bulkhead-system"
	editor := "alice-control-editor"
	mustCreate(t, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "control-editor-alice"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "bulkhead-control-editor"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: editor}},
	})
	alice := as(t, editor)
	baseline := func(name string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{
			"app.kubernetes.io/managed-by": "bulkhead", "app.kubernetes.io/component": "behavior-baseline"}},
			BinaryData: map[string][]byte{"baseline": []byte("x")}}
	}
	// Until the guard is in force (and RBAC lets her create ConfigMaps at
	// all: a plain ConfigMap is accepted), her planted baseline must be
	// refused with the guard's message.
	var last error
	err := wait.PollUntilContextTimeout(ctx(t), 200*time.Millisecond, 30*time.Second, true, func(c context.Context) (bool, error) {
		plain := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alice-notes"}}
		if err := alice.Create(c, plain); err != nil && !strings.Contains(err.Error(), "already exists") {
			last = err
			return false, nil
		}
		last = alice.Create(c, baseline("bulkhead-baseline-planted"))
		return last != nil && strings.Contains(last.Error(), "behavior baselines are written only by Bulkhead"), nil
	})
	if err != nil {
		t.Fatalf("a control-editor planted a baseline (last answer: %v): %v", last, err)
	}
	// A plain ConfigMap relabelled as a baseline is an update: refused too
	// (she may update only bulkhead-control; relabel that).
	pause := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bulkhead-control"}, Data: map[string]string{"paused": "false"}}
	if err := env.Client.Create(ctx(t), pause); err == nil {
		// Other tests create the switch themselves.
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), pause) })
	} else if !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	var sw corev1.ConfigMap
	if err := alice.Get(ctx(t), client.ObjectKey{Namespace: ns, Name: "bulkhead-control"}, &sw); err != nil {
		t.Fatal(err)
	}
	sw.Labels = baseline("x").Labels
	if err := alice.Update(ctx(t), &sw); err == nil || !strings.Contains(err.Error(), "behavior baselines are written only by Bulkhead") {
		t.Fatalf("a control-editor turned the pause switch into a baseline: %v", err)
	}
	for _, user := range []string{managerUser, sensorUser} {
		c := as(t, user, "system:serviceaccounts", "system:serviceaccounts:bulkhead-system")
		b := baseline("bulkhead-baseline-" + user[strings.LastIndex(user, ":")+1:])
		if err := c.Create(ctx(t), b); err != nil {
			t.Errorf("%s cannot write a baseline: %v", user, err)
		}
		_ = env.Client.Delete(context.Background(), b)
	}
}
