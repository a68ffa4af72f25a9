package containment

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func TestEvictOnFakeClient(t *testing.T) {
	a := securityv1alpha1.Action{Type: securityv1alpha1.ActionEvict}
	q := quarantineOf(podTarget, a)
	f := newFakeCluster(t, shop()...)
	// The second pass finds the pod gone: Applied, nothing written.
	st := f.applyTwice(q, a)
	if f.get(&corev1.Pod{}, "shop-1", ns) {
		t.Fatal("pod not evicted")
	}
	if st.Resource != "Pod/shop-1" {
		t.Fatalf("resource %q", st.Resource)
	}
	// An eviction cannot be undone, whatever happened meanwhile.
	if o := f.revert(q, a, st); o.Changed || st.State != securityv1alpha1.ActionNotReverted || st.RevertedAt != nil {
		t.Fatalf("revert: %+v %+v", o, st)
	}
}
