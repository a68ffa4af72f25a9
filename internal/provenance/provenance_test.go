package provenance

import (
	"bytes"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func TestSignAndVerify(t *testing.T) {
	s, err := New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New([]byte("short")); err == nil {
		t.Fatal("a short key must be refused")
	}
	q := &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "shop-1", Annotations: map[string]string{securityv1alpha1.CreatedByPolicyAnnotation: "p"}},
		Spec:       securityv1alpha1.QuarantineSpec{Target: securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: "shop-1"}},
	}
	if s.Made(q) {
		t.Fatal("unsigned counted as made")
	}
	q.Annotations[Annotation] = s.Sign(q)
	if !s.Made(q) {
		t.Fatal("signed not counted as made")
	}
	var nilSigner *Signer
	if nilSigner.Made(q) {
		t.Fatal("a nil signer trusts nothing")
	}
	other, _ := New(bytes.Repeat([]byte{8}, 32))
	if other.Made(q) {
		t.Fatal("another key verified it")
	}
	for name, mut := range map[string]func(*securityv1alpha1.Quarantine){
		"copied to another name": func(q *securityv1alpha1.Quarantine) { q.Name = "f1" },
		"copied to another pod":  func(q *securityv1alpha1.Quarantine) { q.Spec.Target.Name = "other" },
		"another policy":         func(q *securityv1alpha1.Quarantine) { q.Annotations[securityv1alpha1.CreatedByPolicyAnnotation] = "x" },
		"another namespace":      func(q *securityv1alpha1.Quarantine) { q.Namespace = "team" },
		"garbage signature":      func(q *securityv1alpha1.Quarantine) { q.Annotations[Annotation] = "zz" },
		"no created-by annotation": func(q *securityv1alpha1.Quarantine) {
			delete(q.Annotations, securityv1alpha1.CreatedByPolicyAnnotation)
		},
	} {
		c := q.DeepCopy()
		mut(c)
		if s.Made(c) {
			t.Errorf("%s: still verified", name)
		}
	}
}
