package evidence

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// TestJanitorKeepsEvidenceForRetention: evidence outlives its Quarantine
// for the retention period, then goes.
func TestJanitorKeepsEvidenceForRetention(t *testing.T) {
	ctx := context.Background()
	live := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Name: "live", Namespace: "web", UID: "uid-live"}}
	gone := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Name: "gone", Namespace: "web", UID: "uid-gone"}}
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(live).Build()
	for _, q := range []*securityv1alpha1.Quarantine{live, gone} {
		if err := Spill(ctx, c, "bulkhead-system", q, []byte(`{}`), "x"); err != nil {
			t.Fatal(err)
		}
	}
	// A Secret that is not evidence is never touched.
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "bulkhead-system"}}); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	j := &Janitor{Client: c, Secrets: c, Quarantines: c, Namespace: "bulkhead-system", Retention: 48 * time.Hour, Now: func() time.Time { return now }}
	get := func(q *securityv1alpha1.Quarantine) (*corev1.Secret, error) {
		s := &corev1.Secret{}
		return s, c.Get(ctx, client.ObjectKey{Namespace: "bulkhead-system", Name: SecretName(q)}, s)
	}
	if n, err := j.RunOnce(ctx); err != nil || n != 0 {
		t.Fatal(n, err)
	}
	s, err := get(gone)
	if err != nil || s.Annotations[ExpiresAnnotation] != "2026-01-03T00:00:00Z" {
		t.Fatalf("the retention starts when the Quarantine is found gone: %v %v", s.Annotations, err)
	}
	if s, _ := get(live); s.Annotations[ExpiresAnnotation] != "" {
		t.Fatal("a live Quarantine's evidence does not expire")
	}
	now = now.Add(47 * time.Hour)
	if n, err := j.RunOnce(ctx); err != nil || n != 0 {
		t.Fatal("deleted before the retention ended", n, err)
	}
	now = now.Add(time.Hour)
	if n, err := j.RunOnce(ctx); err != nil || n != 1 {
		t.Fatal(n, err)
	}
	if _, err := get(gone); err == nil {
		t.Fatal("expired evidence kept")
	}
	if _, err := get(live); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "bulkhead-system", Name: "other"}, &corev1.Secret{}); err != nil {
		t.Fatal("a Secret that is not evidence was deleted")
	}
}

func TestFindAndDecode(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).Build()
	q := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Name: "q", Namespace: "web", UID: "u1"}}
	d := Capture(metav1.Now(), shopPod(), nil, nil)
	raw, sum, _ := d.Encode()
	if err := Spill(ctx, c, "bulkhead-system", q, raw, sum); err != nil {
		t.Fatal(err)
	}
	other := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Name: "q", Namespace: "web-2", UID: "u2"}}
	if err := Spill(ctx, c, "bulkhead-system", other, raw, sum); err != nil {
		t.Fatal(err)
	}
	found, err := Find(ctx, c, "bulkhead-system", "web", "q")
	if err != nil || len(found) != 1 || found[0].Name != SecretName(q) {
		t.Fatalf("%v %d", err, len(found))
	}
	back, err := Decode(&found[0])
	if err != nil || back.Pod != "shop-1" || back.Containers[0].RestartCount != 4 {
		t.Fatalf("%+v %v", back, err)
	}
	found[0].Data[DataKey] = append(found[0].Data[DataKey], ' ')
	if _, err := Decode(&found[0]); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatal("a changed document must not pass its digest", err)
	}
}
