package podresponse

import (
	"bytes"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/provenance"
)

func signedQuarantine(s *provenance.Signer, uid, rv string) *securityv1alpha1.Quarantine {
	q := &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "shop-1", UID: types.UID(uid), ResourceVersion: rv,
			Annotations: map[string]string{securityv1alpha1.CreatedByPolicyAnnotation: "p"}},
		Spec: securityv1alpha1.QuarantineSpec{Target: securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: "shop-1"}},
	}
	q.Annotations[provenance.Annotation] = s.Sign(q)
	return q
}

func signer(t testing.TB, b byte) *provenance.Signer {
	s, err := provenance.New(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Issue 17: the provenance check is remembered per Quarantine version only:
// a new version (any write, such as a forged annotation) is checked again,
// and so is everything when the key changes.
func TestVerifiedPerVersion(t *testing.T) {
	var v verified
	s := signer(t, 7)
	q := signedQuarantine(s, "u1", "1")
	for range 2 { // checked, then remembered
		if !v.made(s, q) {
			t.Fatal("a signed Quarantine is the manager's")
		}
	}
	forged := q.DeepCopy()
	forged.ResourceVersion = "2"
	forged.Annotations[securityv1alpha1.CreatedByPolicyAnnotation] = "other"
	if v.made(s, forged) {
		t.Fatal("a new version with another policy kept the old verdict")
	}
	if other := signer(t, 8); v.made(other, q) {
		t.Fatal("another key kept the old verdict")
	}
	unversioned := q.DeepCopy()
	unversioned.ResourceVersion = ""
	unversioned.Annotations[provenance.Annotation] = "00"
	if v.made(s, unversioned) {
		t.Fatal("an object without a version is checked every time")
	}
}

func TestVerifiedForgetsDeletedQuarantines(t *testing.T) {
	var v verified
	s := signer(t, 7)
	var listed []*securityv1alpha1.Quarantine
	for i := range 200 {
		q := signedQuarantine(s, fmt.Sprintf("u%d", i), "1")
		v.made(s, q)
		if i < 10 {
			listed = append(listed, q)
		}
	}
	v.keepOnly(listed)
	if len(v.byUID) != 10 {
		t.Fatalf("%d verdicts kept, want the 10 listed", len(v.byUID))
	}
}

// BenchmarkVerified is the provenance check of one Quarantine a decision
// reads: a decision reads all of them, under decideMu.
func BenchmarkVerified(b *testing.B) {
	s := signer(b, 7)
	q := signedQuarantine(s, "u1", "1")
	b.Run("hmac", func(b *testing.B) {
		for b.Loop() {
			s.Made(q)
		}
	})
	b.Run("remembered", func(b *testing.B) {
		var v verified
		for b.Loop() {
			v.made(s, q)
		}
	})
}
