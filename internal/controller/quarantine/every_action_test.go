package quarantine

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// For every action type: a second pass on a Contained Quarantine writes
// nothing; a missing target fails it with TargetNotFound and writes nothing
// but the finalizer and status; a missing owner gives the expected state.
func TestEveryAction(t *testing.T) {
	ownerMissing := map[securityv1alpha1.ActionType]securityv1alpha1.ActionState{
		securityv1alpha1.ActionIsolate:     securityv1alpha1.ActionApplied,
		securityv1alpha1.ActionLabel:       securityv1alpha1.ActionApplied,
		securityv1alpha1.ActionCordonNode:  securityv1alpha1.ActionApplied,
		securityv1alpha1.ActionEvict:       securityv1alpha1.ActionApplied,
		securityv1alpha1.ActionDetach:      securityv1alpha1.ActionRefused,
		securityv1alpha1.ActionScaleToZero: securityv1alpha1.ActionRefused,
	}
	for _, a := range []securityv1alpha1.Action{
		isolateDNS(), labelAction(), act(securityv1alpha1.ActionCordonNode), act(securityv1alpha1.ActionEvict),
		{Type: securityv1alpha1.ActionDetach}, act(securityv1alpha1.ActionScaleToZero),
	} {
		t.Run(string(a.Type), func(t *testing.T) {
			f := newFixture(t, 1)
			w := &writes{failAfter: -1}
			r, _ := newReconciler(w.client())

			key := f.quarantine(t, "q1", f.pods[0].Name, a)
			drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
			n := w.n.Load()
			if _, err := r.Reconcile(ctx, reqFor(key)); err != nil {
				t.Fatal(err)
			}
			if extra := w.n.Load() - n; extra != 0 {
				t.Fatalf("second pass made %d writes", extra)
			}

			n = w.n.Load()
			missing := f.quarantine(t, "q2", "no-such-pod", a)
			q := drive(t, r, missing, phaseIs(securityv1alpha1.PhaseFailed))
			if readyReason(q) != securityv1alpha1.ReasonTargetNotFound || w.n.Load()-n != 2 {
				t.Fatalf("reason %s, %d writes", readyReason(q), w.n.Load()-n)
			}

			ghost := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "gone", UID: "0b3f0e0e-0000-4000-8000-000000000001"}}
			orphan := f.pod(t, "orphan", map[string]string{"app": "shop"}, new(controllerRef(ghost, "apps/v1", "ReplicaSet")))
			k3 := f.quarantine(t, "q3", orphan.Name, a)
			q = drive(t, r, k3, func(q *securityv1alpha1.Quarantine) bool {
				return q.Status.Phase == securityv1alpha1.PhaseContained || q.Status.Phase == securityv1alpha1.PhaseFailed
			})
			if st := actionState(q, a.Type); st.State != ownerMissing[a.Type] {
				t.Fatalf("owner missing: %+v", st)
			}
		})
	}
}
