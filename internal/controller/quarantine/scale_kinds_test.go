package quarantine

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
)

// A StatefulSet's pod: the StatefulSet goes to zero and back to its count.
func TestScaleToZeroStatefulSet(t *testing.T) {
	f := newFixture(t, 0)
	labels := map[string]string{"app": "db"}
	n := int32(2)
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: f.ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas: &n, ServiceName: "db", Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Image: "postgres:17"}}}},
		},
	}
	must(t, direct.Create(ctx, sts))
	pod := f.pod(t, "db-0", labels, new(controllerRef(sts, "apps/v1", "StatefulSet")))
	r, _ := newReconciler(direct)
	key := f.quarantine(t, "qs", pod.Name, act(securityv1alpha1.ActionScaleToZero))
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	st := actionState(q, securityv1alpha1.ActionScaleToZero)
	if st.State != securityv1alpha1.ActionApplied || st.Resource != "StatefulSet/db" || st.OriginalReplicas == nil || *st.OriginalReplicas != 2 {
		t.Fatalf("ScaleToZero of a StatefulSet pod: %+v", st)
	}
	must(t, direct.Get(ctx, client.ObjectKeyFromObject(sts), sts))
	if *sts.Spec.Replicas != 0 {
		t.Fatalf("StatefulSet at %d replicas, want 0", *sts.Spec.Replicas)
	}
	release(t, key)
	drive(t, r, key, released)
	must(t, direct.Get(ctx, client.ObjectKeyFromObject(sts), sts))
	if *sts.Spec.Replicas != 2 || sts.Annotations[containment.HoldersAnnotation] != "" {
		t.Fatalf("StatefulSet not restored: replicas %d, annotations %v", *sts.Spec.Replicas, sts.Annotations)
	}
}

// A CronJob's pod (pod → Job → CronJob): the top controller, the CronJob,
// is suspended so no new run starts, and resumed at release.
func TestScaleToZeroSuspendsCronJob(t *testing.T) {
	f := newFixture(t, 0)
	tmpl := batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "j", Image: "busybox"}},
	}}}}
	cj := &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: "nightly", Namespace: f.ns},
		Spec:       batchv1.CronJobSpec{Schedule: "0 3 * * *", JobTemplate: tmpl},
	}
	must(t, direct.Create(ctx, cj))
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "nightly-1", Namespace: f.ns, OwnerReferences: []metav1.OwnerReference{controllerRef(cj, "batch/v1", "CronJob")}},
		Spec:       tmpl.Spec,
	}
	must(t, direct.Create(ctx, job))
	pod := f.pod(t, "nightly-1-x", map[string]string{"job": "nightly-1"}, new(controllerRef(job, "batch/v1", "Job")))
	r, _ := newReconciler(direct)
	key := f.quarantine(t, "qc", pod.Name, act(securityv1alpha1.ActionScaleToZero))
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	if st := actionState(q, securityv1alpha1.ActionScaleToZero); st.State != securityv1alpha1.ActionApplied || st.Resource != "CronJob/nightly" {
		t.Fatalf("ScaleToZero of a CronJob's pod: %+v", st)
	}
	must(t, direct.Get(ctx, client.ObjectKeyFromObject(cj), cj))
	if cj.Spec.Suspend == nil || !*cj.Spec.Suspend {
		t.Fatal("CronJob not suspended")
	}
	release(t, key)
	drive(t, r, key, released)
	must(t, direct.Get(ctx, client.ObjectKeyFromObject(cj), cj))
	if (cj.Spec.Suspend != nil && *cj.Spec.Suspend) || cj.Annotations[containment.HoldersAnnotation] != "" {
		t.Fatalf("CronJob not restored: suspend=%v annotations=%v", cj.Spec.Suspend, cj.Annotations)
	}
}
