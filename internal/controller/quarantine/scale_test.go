package quarantine

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
)

func replicas(t *testing.T, f *fixture) int32 {
	t.Helper()
	d := &appsv1.Deployment{}
	must(t, direct.Get(ctx, client.ObjectKeyFromObject(f.dep), d))
	return *d.Spec.Replicas
}

// Three quarantined replicas of one Deployment: scaled once, restored once,
// when the last holder releases.
func TestScaleToZeroSharedWorkload(t *testing.T) {
	f := newFixture(t, 3)
	before := f.snapshot(t)
	w := &writes{failAfter: -1}
	r, _ := newReconciler(w.client())
	keys := make([]client.ObjectKey, 0, len(f.pods))
	for i, p := range f.pods {
		keys = append(keys, f.quarantine(t, "q"+string(rune('a'+i)), p.Name, act(securityv1alpha1.ActionScaleToZero)))
	}
	for _, k := range keys {
		q := drive(t, r, k, phaseIs(securityv1alpha1.PhaseContained))
		st := actionState(q, securityv1alpha1.ActionScaleToZero)
		if st.State != securityv1alpha1.ActionApplied || st.Resource != "Deployment/shop" || st.OriginalReplicas == nil || *st.OriginalReplicas != 3 {
			t.Fatalf("%s: %+v", k.Name, st)
		}
	}
	if got := replicas(t, f); got != 0 {
		t.Fatalf("replicas %d, want 0", got)
	}
	d := &appsv1.Deployment{}
	must(t, direct.Get(ctx, client.ObjectKeyFromObject(f.dep), d))
	if h := d.Annotations[containment.HoldersAnnotation]; strings.Count(h, ",") != 2 {
		t.Fatalf("holders %q, want three", h)
	}
	n := w.n.Load()
	for _, k := range keys {
		if _, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: k}); err != nil {
			t.Fatal(err)
		}
	}
	if extra := w.n.Load() - n; extra != 0 {
		t.Fatalf("passes on contained quarantines made %d writes", extra)
	}
	for i, k := range keys {
		release(t, k)
		drive(t, r, k, released)
		want := int32(0)
		if i == len(keys)-1 {
			want = 3
		}
		if got := replicas(t, f); got != want {
			t.Fatalf("after releasing %d of 3: replicas %d, want %d", i+1, got, want)
		}
	}
	if after := f.snapshot(t); after != before {
		t.Fatalf("not as before:\nbefore %s\nafter %s", before, after)
	}
}

// A count changed by someone else meanwhile is left alone: NotReverted.
func TestScaleToZeroChangedMeanwhileIsNotReverted(t *testing.T) {
	f := newFixture(t, 2)
	r, _ := newReconciler(direct)
	key := f.quarantine(t, "qa", f.pods[0].Name, act(securityv1alpha1.ActionScaleToZero))
	drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	d := &appsv1.Deployment{}
	must(t, direct.Get(ctx, client.ObjectKeyFromObject(f.dep), d))
	base := d.DeepCopy()
	d.Spec.Replicas = new(int32(5))
	must(t, direct.Patch(ctx, d, client.MergeFrom(base)))
	release(t, key)
	q := drive(t, r, key, released)
	st := actionState(q, securityv1alpha1.ActionScaleToZero)
	if st.State != securityv1alpha1.ActionNotReverted || !strings.Contains(st.Message, "changed to 5") {
		t.Fatalf("%+v", st)
	}
	if got := replicas(t, f); got != 5 {
		t.Fatalf("replicas %d, want 5 (left as someone set it)", got)
	}
}

func TestScaleToZeroOwnerMissingIsRefused(t *testing.T) {
	f := newFixture(t, 0)
	ghost := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "gone", UID: "0b3f0e0e-0000-4000-8000-000000000000"}}
	pod := f.pod(t, "orphan", map[string]string{"app": "shop"}, new(controllerRef(ghost, "apps/v1", "ReplicaSet")))
	r, _ := newReconciler(direct)
	key := f.quarantine(t, "qa", pod.Name, act(securityv1alpha1.ActionIsolate), act(securityv1alpha1.ActionScaleToZero))
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	st := actionState(q, securityv1alpha1.ActionScaleToZero)
	if st.State != securityv1alpha1.ActionRefused || !strings.Contains(st.Message, "ReplicaSet/gone not found") {
		t.Fatalf("%+v", st)
	}
	// Nothing applicable at all: Failed, reason NothingApplied.
	key2 := f.quarantine(t, "qb", pod.Name, act(securityv1alpha1.ActionScaleToZero))
	release(t, key)
	drive(t, r, key, released)
	q = drive(t, r, key2, phaseIs(securityv1alpha1.PhaseFailed))
	if c := readyReason(q); c != securityv1alpha1.ReasonNothingApplied {
		t.Fatalf("Ready reason %q", c)
	}
}

func readyReason(q *securityv1alpha1.Quarantine) string {
	for _, c := range q.Status.Conditions {
		if c.Type == securityv1alpha1.ConditionReady {
			return c.Reason
		}
	}
	return ""
}

func TestScaleToZeroDaemonSetRefusedAndHPAWarned(t *testing.T) {
	f := newFixture(t, 1)
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: f.ns},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "agent"}}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "agent"}}}},
		},
	}
	must(t, direct.Create(ctx, ds))
	agent := f.pod(t, "agent-x", map[string]string{"app": "agent"}, new(controllerRef(ds, "apps/v1", "DaemonSet")))
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: f.ns},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "shop"},
			MinReplicas:    new(int32(1)), MaxReplicas: 5,
		},
	}
	must(t, direct.Create(ctx, hpa))
	r, _ := newReconciler(direct)
	kd := f.quarantine(t, "qd", agent.Name, act(securityv1alpha1.ActionIsolate), act(securityv1alpha1.ActionScaleToZero))
	q := drive(t, r, kd, phaseIs(securityv1alpha1.PhaseContained))
	if st := actionState(q, securityv1alpha1.ActionScaleToZero); st.State != securityv1alpha1.ActionRefused || !strings.Contains(st.Message, "DaemonSet") {
		t.Fatalf("%+v", st)
	}
	kh := f.quarantine(t, "qh", f.pods[0].Name, act(securityv1alpha1.ActionScaleToZero))
	q = drive(t, r, kh, phaseIs(securityv1alpha1.PhaseContained))
	if st := actionState(q, securityv1alpha1.ActionScaleToZero); !strings.Contains(st.Message, "HorizontalPodAutoscaler shop") {
		t.Fatalf("no HPA warning: %+v", st)
	}
}

func TestScaleToZeroSuspendsJob(t *testing.T) {
	f := newFixture(t, 0)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "batch", Namespace: f.ns},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "j", Image: "busybox"}},
		}}},
	}
	must(t, direct.Create(ctx, job))
	pod := f.pod(t, "batch-x", map[string]string{"job": "batch"}, new(controllerRef(job, "batch/v1", "Job")))
	r, _ := newReconciler(direct)
	key := f.quarantine(t, "qj", pod.Name, act(securityv1alpha1.ActionScaleToZero))
	drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	must(t, direct.Get(ctx, client.ObjectKeyFromObject(job), job))
	if job.Spec.Suspend == nil || !*job.Spec.Suspend {
		t.Fatal("job not suspended")
	}
	release(t, key)
	drive(t, r, key, released)
	must(t, direct.Get(ctx, client.ObjectKeyFromObject(job), job))
	if *job.Spec.Suspend || job.Annotations[containment.HoldersAnnotation] != "" {
		t.Fatalf("job not restored: suspend=%v annotations=%v", *job.Spec.Suspend, job.Annotations)
	}
}

// A Deployment target: every pod isolated, the NetworkPolicy selects the
// Deployment's pods (replacements too), the Deployment scaled to zero.
func TestDeploymentTarget(t *testing.T) {
	f := newFixture(t, 2)
	before := f.snapshot(t)
	r, _ := newReconciler(direct)
	q := &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: f.ns},
		Spec: securityv1alpha1.QuarantineSpec{
			Target:  securityv1alpha1.Target{Kind: securityv1alpha1.TargetDeployment, Name: "shop"},
			Actions: []securityv1alpha1.Action{act(securityv1alpha1.ActionIsolate), act(securityv1alpha1.ActionScaleToZero), act(securityv1alpha1.ActionCordonNode)},
		},
	}
	must(t, direct.Create(ctx, q))
	key := client.ObjectKeyFromObject(q)
	q = drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	if len(q.Status.Target.Pods) != 2 || q.Status.Target.UID != string(f.dep.UID) {
		t.Fatalf("target %+v", q.Status.Target)
	}
	if st := actionState(q, securityv1alpha1.ActionCordonNode); st.State != securityv1alpha1.ActionRefused {
		t.Fatalf("CordonNode on a workload must be Refused: %+v", st)
	}
	for _, p := range f.pods {
		pod := &corev1.Pod{}
		must(t, direct.Get(ctx, client.ObjectKeyFromObject(p), pod))
		if pod.Labels[securityv1alpha1.QuarantineLabel] != "shop" {
			t.Fatalf("%s not labelled", p.Name)
		}
	}
	if replicas(t, f) != 0 {
		t.Fatal("not scaled")
	}
	release(t, key)
	drive(t, r, key, released)
	if after := f.snapshot(t); after != before {
		t.Fatalf("not as before:\nbefore %s\nafter %s", before, after)
	}
}

// Any kind serving /scale is scaled through it, here a stand-in Rollout.
func TestScaleToZeroCustomResourceScale(t *testing.T) {
	f := newFixture(t, 0)
	ro := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"replicas": int64(3)}}}
	ro.SetGroupVersionKind(schema.GroupVersionKind{Group: "argoproj.io", Version: "v1alpha1", Kind: "Rollout"})
	ro.SetNamespace(f.ns)
	ro.SetName("web")
	must(t, direct.Create(ctx, ro))
	pod := f.pod(t, "web-x", map[string]string{"app": "web"}, new(controllerRef(ro, "argoproj.io/v1alpha1", "Rollout")))
	r, _ := newReconciler(direct)
	key := f.quarantine(t, "qr", pod.Name, act(securityv1alpha1.ActionScaleToZero))
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	if st := actionState(q, securityv1alpha1.ActionScaleToZero); st.Resource != "Rollout/web" || st.ResourceAPIVersion != "argoproj.io/v1alpha1" || *st.OriginalReplicas != 3 {
		t.Fatalf("%+v", st)
	}
	rolloutReplicas := func() int64 {
		must(t, direct.Get(ctx, client.ObjectKeyFromObject(ro), ro))
		n, _, _ := unstructured.NestedInt64(ro.Object, "spec", "replicas")
		return n
	}
	if n := rolloutReplicas(); n != 0 {
		t.Fatalf("replicas %d", n)
	}
	release(t, key)
	drive(t, r, key, released)
	if n := rolloutReplicas(); n != 3 || ro.GetAnnotations()[containment.HoldersAnnotation] != "" {
		t.Fatalf("replicas %d annotations %v", n, ro.GetAnnotations())
	}
}
