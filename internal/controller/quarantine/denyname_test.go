package quarantine

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
)

// clusterDenies lists the cluster-scoped deny objects labelled for the
// Quarantine ns/name, as "Kind/name".
func clusterDenies(t *testing.T, ns, name string) []string {
	t.Helper()
	var out []string
	for _, fl := range containment.DenyFlavors {
		if fl.Namespaced() {
			continue
		}
		l := &unstructured.UnstructuredList{}
		l.SetGroupVersionKind(fl.GVK().GroupVersion().WithKind(fl.GVK().Kind + "List"))
		must(t, direct.List(ctx, l, client.MatchingLabels{containment.QuarantineNamespaceLabel: ns, securityv1alpha1.QuarantineLabel: name}))
		for _, u := range l.Items {
			if u.GetDeletionTimestamp() == nil {
				out = append(out, u.GetKind()+"/"+u.GetName())
			}
		}
	}
	return out
}

func clusterFlavors() int {
	n := 0
	for _, fl := range containment.DenyFlavors {
		if !fl.Namespaced() {
			n++
		}
	}
	return n
}

// Issue 14 item 9: team/a-x and team-a/x were both "bulkhead-team-a-x"; the
// second Isolate forced over the first's deny, and releasing either deleted
// the deny the other still needed.
func TestClusterDenyNamesDoNotCollide(t *testing.T) {
	team := newFixture(t, 1)
	teamA := newFixtureIn(t, team.ns+"-a", 1)
	r, _ := newReconciler(direct)
	k1 := team.quarantine(t, "a-x", team.pods[0].Name, act(securityv1alpha1.ActionIsolate))
	drive(t, r, k1, phaseIs(securityv1alpha1.PhaseContained))
	k2 := teamA.quarantine(t, "x", teamA.pods[0].Name, act(securityv1alpha1.ActionIsolate))
	drive(t, r, k2, phaseIs(securityv1alpha1.PhaseContained))
	if got := clusterDenies(t, team.ns, "a-x"); len(got) != clusterFlavors() {
		t.Fatalf("team/a-x must keep its own cluster-wide denies, has %v", got)
	}

	release(t, k2)
	drive(t, r, k2, released)
	if got := clusterDenies(t, team.ns, "a-x"); len(got) != clusterFlavors() {
		t.Fatalf("releasing team-a/x removed team/a-x's cluster-wide denies: left %v", got)
	}
	if got := clusterDenies(t, teamA.ns, "x"); len(got) != 0 {
		t.Fatalf("team-a/x's denies not removed: %v", got)
	}
	release(t, k1)
	drive(t, r, k1, released)
	if got := clusterDenies(t, team.ns, "a-x"); len(got) != 0 {
		t.Fatalf("team/a-x's denies not removed: %v", got)
	}
}

// An object at the deny's name that is not Bulkhead's for this Quarantine
// is neither overwritten nor deleted; Isolate says why it cannot finish.
func TestClusterDenyNeverTouchesForeignObject(t *testing.T) {
	f := newFixture(t, 1)
	var foreign []*unstructured.Unstructured
	for _, fl := range containment.DenyFlavors {
		if fl.Namespaced() {
			continue
		}
		// A valid object of the kind (the envtest CRDs are the upstream
		// schemas), at the deny's name, but someone else's.
		u := fl.Object(&securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "shop-f"}}, false)
		u.SetLabels(map[string]string{"owner": "platform-team"})
		must(t, direct.Create(ctx, u))
		t.Cleanup(func() { _ = direct.Delete(ctx, u) })
		foreign = append(foreign, u)
	}
	r, _ := newReconciler(direct)
	key := f.quarantine(t, "shop-f", f.pods[0].Name, act(securityv1alpha1.ActionIsolate))
	for range 5 {
		_, _ = r.Reconcile(ctx, reqFor(key))
	}
	q := getQ(t, key)
	if st := actionState(q, securityv1alpha1.ActionIsolate); st.State == securityv1alpha1.ActionApplied {
		t.Fatalf("Isolate reported Applied though its cluster-wide deny could not be written: %+v", st)
	}
	for _, u := range foreign {
		have := &unstructured.Unstructured{}
		have.SetGroupVersionKind(u.GroupVersionKind())
		must(t, direct.Get(ctx, client.ObjectKeyFromObject(u), have))
		if have.GetLabels()["owner"] != "platform-team" || have.GetLabels()[securityv1alpha1.ManagedByLabel] != "" {
			t.Fatalf("%s %s was overwritten: labels %v", u.GetKind(), u.GetName(), have.GetLabels())
		}
	}
	release(t, key)
	drive(t, r, key, released)
	for _, u := range foreign {
		have := &unstructured.Unstructured{}
		have.SetGroupVersionKind(u.GroupVersionKind())
		if err := direct.Get(ctx, client.ObjectKeyFromObject(u), have); err != nil {
			t.Fatalf("%s %s was deleted at release: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// Migration: a deny created under the old name (bulkhead-<ns>-<name>) is
// found by its labels and removed at release.
func TestReleaseRemovesDenyUnderOldName(t *testing.T) {
	f := newFixture(t, 1)
	r, _ := newReconciler(direct)
	key := f.quarantine(t, "shop-o", f.pods[0].Name, act(securityv1alpha1.ActionIsolate))
	drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	for _, fl := range containment.DenyFlavors {
		if fl.Namespaced() {
			continue
		}
		u := fl.Object(&securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "shop-o"}}, false)
		u.SetName("bulkhead-" + f.ns + "-shop-o")
		l := containment.ManagedLabels("shop-o")
		l[containment.QuarantineNamespaceLabel] = f.ns
		u.SetLabels(l)
		must(t, direct.Create(ctx, u))
	}
	if got := clusterDenies(t, f.ns, "shop-o"); len(got) != 2*clusterFlavors() {
		t.Fatalf("want the new and the old-named denies, have %v", got)
	}
	release(t, key)
	drive(t, r, key, released)
	if got := clusterDenies(t, f.ns, "shop-o"); len(got) != 0 {
		t.Fatalf("release left denies behind: %v", got)
	}
}
