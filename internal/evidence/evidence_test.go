package evidence

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func TestRedactArgs(t *testing.T) {
	in := []string{"--port=80", "--password=hunter2", "--token", "abc", "-v", "API_KEY=xyz", "serve", "--db-secret", "s"}
	got := strings.Join(RedactArgs(in), " ")
	want := "--port=80 --password=REDACTED --token REDACTED -v API_KEY=REDACTED serve --db-secret REDACTED"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if RedactArgs(nil) != nil {
		t.Fatal("nil in, nil out")
	}
}

func TestRedactPodSpecKeepsReferencesAndDoesNotTouchInput(t *testing.T) {
	in := &corev1.PodSpec{Containers: []corev1.Container{{
		Name: "c", Env: []corev1.EnvVar{
			{Name: "PLAIN", Value: "v"},
			{Name: "FROM_SECRET", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "pw"}}},
		},
		Args: []string{"--password=x"},
	}}}
	out := RedactPodSpec(in)
	if out.Containers[0].Env[0].Value != Redacted || out.Containers[0].Env[1].ValueFrom.SecretKeyRef.Name != "db" || out.Containers[0].Args[0] != "--password=REDACTED" {
		t.Fatalf("%+v", out.Containers[0])
	}
	if in.Containers[0].Env[0].Value != "v" || in.Containers[0].Args[0] != "--password=x" {
		t.Fatal("input modified")
	}
}

func TestEvidenceDigestAndSpill(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{"app": "shop"}},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "nginx"}}},
		Status:     corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "c", ImageID: "nginx@sha256:abc", RestartCount: 3}}},
	}
	d := Capture(metav1.Now(), pod, []string{"ReplicaSet/rs"}, nil)
	raw, sum, err := d.Encode()
	if err != nil || len(sum) != 64 {
		t.Fatal(err, sum)
	}
	if len(d.Containers) != 1 || d.Containers[0].RestartCount != 3 {
		t.Fatalf("container statuses: %+v", d.Containers)
	}
	ev, err := Status(d, raw, sum, "s")
	if err != nil || ev.SecretRef != "s" || ev.PodSpec == nil || ev.Images[0].ImageID != "nginx@sha256:abc" || ev.OwnerChain[0] != "ReplicaSet/rs" {
		t.Fatalf("%+v %v", ev, err)
	}
	// A pod spec too large for status is only in the Secret.
	pod.Spec.Containers[0].Args = []string{strings.Repeat("a", MaxInStatus)}
	d = Capture(metav1.Now(), pod, nil, nil)
	raw, sum, _ = d.Encode()
	ev, err = Status(d, raw, sum, "s")
	if err != nil || ev.SecretRef != "s" || ev.PodSpec != nil || ev.SizeBytes != int64(len(raw)) {
		t.Fatalf("%+v %v", ev, err)
	}
}

// TestSpillKeepsEvidenceInManagerNamespace: the Secret was written in the
// tenant's namespace, owned by the Quarantine, so deleting the Quarantine
// deleted the evidence. It now lives in the manager namespace, owned by
// nothing, naming its Quarantine.
func TestSpillKeepsEvidenceInManagerNamespace(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).Build()
	q := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Name: "q", Namespace: "web", UID: "uid-q"}}
	ctx := context.Background()
	if err := Spill(ctx, c, "bulkhead-system", q, []byte(`{"pod":"p"}`), "abc"); err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "bulkhead-system", Name: SecretName(q)}, sec); err != nil {
		t.Fatal(err)
	}
	if string(sec.Data[DataKey]) != `{"pod":"p"}` || sec.Annotations[SHA256Annotation] != "abc" || sec.Annotations[QuarantineUIDAnnotation] != "uid-q" ||
		sec.Labels[QuarantineNamespaceLabel] != "web" || len(sec.OwnerReferences) != 0 {
		t.Fatalf("%+v", sec)
	}
	var inTenant corev1.SecretList
	if err := c.List(ctx, &inTenant, client.InNamespace("web")); err != nil || len(inTenant.Items) != 0 {
		t.Fatalf("evidence in the tenant namespace: %v %d", err, len(inTenant.Items))
	}
	if err := Spill(ctx, c, "", q, nil, ""); err == nil {
		t.Fatal("no manager namespace must be an error")
	}
	// Same name in another namespace, or recreated: another Secret.
	other := q.DeepCopy()
	other.Namespace = "web-x"
	again := q.DeepCopy()
	again.UID = "uid-2"
	if SecretName(other) == SecretName(q) || SecretName(again) == SecretName(q) {
		t.Fatal("evidence Secret names collide")
	}
}

func testScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := securityv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return scheme
}
