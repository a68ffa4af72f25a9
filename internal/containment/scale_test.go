package containment

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func TestScaleToZeroOnFakeClient(t *testing.T) {
	a := securityv1alpha1.Action{Type: securityv1alpha1.ActionScaleToZero}
	q := quarantineOf(podTarget, a)

	t.Run("apply, apply again without writes, revert", func(t *testing.T) {
		f := newFakeCluster(t, shop()...)
		st := f.applyTwice(q, a)
		d := &appsv1.Deployment{}
		f.get(d, "shop", ns)
		if *d.Spec.Replicas != 0 || d.Annotations[OriginalReplicasAnnotation] != "3" || d.Annotations[HoldersAnnotation] != "web/q1" || st.OriginalReplicas == nil || *st.OriginalReplicas != 3 || st.Resource != "Deployment/shop" {
			t.Fatalf("deployment %v %+v, status %+v", d.Annotations, d.Spec.Replicas, st)
		}
		if o := f.revert(q, a, st); !o.Changed || st.State != securityv1alpha1.ActionReverted {
			t.Fatalf("revert: %+v %+v", o, st)
		}
		f.get(d, "shop", ns)
		if *d.Spec.Replicas != 3 || d.Annotations[HoldersAnnotation] != "" || d.Annotations[OriginalReplicasAnnotation] != "" {
			t.Fatalf("after revert %d %v", *d.Spec.Replicas, d.Annotations)
		}
	})

	t.Run("revert after someone rescaled", func(t *testing.T) {
		f := newFakeCluster(t, shop()...)
		st := f.applyTwice(q, a)
		d := &appsv1.Deployment{}
		f.get(d, "shop", ns)
		d.Spec.Replicas = new(int32(5))
		f.update(d)
		f.revert(q, a, st)
		f.get(d, "shop", ns)
		if st.State != securityv1alpha1.ActionNotReverted || *d.Spec.Replicas != 5 || d.Annotations[HoldersAnnotation] != "" {
			t.Fatalf("state %s (%s), replicas %d, annotations %v", st.State, st.Message, *d.Spec.Replicas, d.Annotations)
		}
	})
}

func TestSuspendJobOnFakeClient(t *testing.T) {
	a := securityv1alpha1.Action{Type: securityv1alpha1.ActionScaleToZero}
	q := quarantineOf(securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: "job-1"}, a)
	tr := true
	objs := func() []client.Object {
		return []client.Object{
			&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "job", Namespace: ns, UID: "uid-job"}},
			&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "job-1", Namespace: ns, UID: "uid-jp",
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: "job", UID: "uid-job", Controller: &tr}}}},
		}
	}
	suspended := func(f *fakeCluster) bool {
		j := &batchv1.Job{}
		f.get(j, "job", ns)
		return j.Spec.Suspend != nil && *j.Spec.Suspend
	}

	t.Run("apply, apply again without writes, revert", func(t *testing.T) {
		f := newFakeCluster(t, objs()...)
		st := f.applyTwice(q, a)
		if !suspended(f) || st.Resource != "Job/job" {
			t.Fatalf("not suspended: %+v", st)
		}
		if f.revert(q, a, st); st.State != securityv1alpha1.ActionReverted || suspended(f) {
			t.Fatalf("revert: %+v", st)
		}
	})

	t.Run("revert after someone resumed it", func(t *testing.T) {
		f := newFakeCluster(t, objs()...)
		st := f.applyTwice(q, a)
		j := &batchv1.Job{}
		f.get(j, "job", ns)
		j.Spec.Suspend = new(false)
		f.update(j)
		f.revert(q, a, st)
		f.get(j, "job", ns)
		if st.State != securityv1alpha1.ActionNotReverted || j.Annotations[HoldersAnnotation] != "" {
			t.Fatalf("state %s (%s), annotations %v", st.State, st.Message, j.Annotations)
		}
	})
}

// ScaleToZero added after Detach: the ReplicaSet has let the pod go (no owner
// reference left), so the owner recorded at creation is the one to scale.
func TestScaleToZeroAfterDetach(t *testing.T) {
	a := securityv1alpha1.Action{Type: securityv1alpha1.ActionScaleToZero}
	orphan := func() []client.Object {
		objs := shop()
		objs[2].SetOwnerReferences(nil) // what the ReplicaSet controller does to a detached pod
		return objs
	}
	t.Run("detached by this Quarantine", func(t *testing.T) {
		f := newFakeCluster(t, orphan()...)
		q := quarantineOf(podTarget, a)
		q.Status.Target = &securityv1alpha1.ResolvedTarget{UID: "uid-pod", Node: "n1", Owner: "Deployment/shop"}
		q.Status.Actions = []securityv1alpha1.ActionStatus{{Type: securityv1alpha1.ActionDetach, State: securityv1alpha1.ActionApplied}}
		st := f.applyTwice(q, a)
		d := &appsv1.Deployment{}
		f.get(d, "shop", ns)
		if *d.Spec.Replicas != 0 || st.Resource != "Deployment/shop" {
			t.Fatalf("replicas %d, status %+v", *d.Spec.Replicas, st)
		}
	})
	t.Run("a pod that never had an owner is still refused", func(t *testing.T) {
		f := newFakeCluster(t, orphan()...)
		q := quarantineOf(podTarget, a)
		q.Status.Target = &securityv1alpha1.ResolvedTarget{UID: "uid-pod", Node: "n1"}
		st := &securityv1alpha1.ActionStatus{}
		if _, n := f.apply(q, a, st); st.State != securityv1alpha1.ActionRefused || n != 0 {
			t.Fatalf("state %s (%s), %d writes", st.State, st.Message, n)
		}
	})
}
