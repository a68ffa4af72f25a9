package quarantine

import (
	"context"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// eventually polls cond; the limit only bounds a broken run, it is no speed
// target.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// In a running manager the watches alone repair tampering: no periodic
// re-check is due within the test.
func TestManagerRepairsTamperingFromWatches(t *testing.T) {
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	must(t, startManager(mctx, nil))
	f := newFixture(t, 1)
	key := f.quarantine(t, "qw", f.pods[0].Name, act(securityv1alpha1.ActionIsolate))
	eventually(t, "Contained", func() bool { return phaseIs(securityv1alpha1.PhaseContained)(getQ(t, key)) })

	npKey := client.ObjectKey{Namespace: f.ns, Name: "bulkhead-qw"}
	np := &networkingv1.NetworkPolicy{}
	must(t, direct.Get(ctx, npKey, np))
	must(t, direct.Delete(ctx, np))
	eventually(t, "NetworkPolicy recreated", func() bool {
		fresh := &networkingv1.NetworkPolicy{}
		return direct.Get(ctx, npKey, fresh) == nil && fresh.UID != np.UID
	})

	pod := getPod(t, f.pods[0])
	base := pod.DeepCopy()
	delete(pod.Labels, securityv1alpha1.QuarantineLabel)
	must(t, direct.Patch(ctx, pod, client.MergeFrom(base)))
	eventually(t, "label restored", func() bool { return getPod(t, f.pods[0]).Labels[securityv1alpha1.QuarantineLabel] == "qw" })

	release(t, key)
	eventually(t, "Released", func() bool { return released(getQ(t, key)) })
}

// Only the controller's own appending of its finalizer is ignored; any
// other change (removed, replaced, someone else's) reconciles.
func TestFinalizersChangedByOthers(t *testing.T) {
	own := securityv1alpha1.QuarantineFinalizer
	for _, c := range []struct {
		name     string
		old, cur []string
		want     bool
	}{
		{"unchanged", []string{own}, []string{own}, false},
		{"own appended", nil, []string{own}, false},
		{"own appended after another", []string{"x/y"}, []string{"x/y", own}, false},
		{"own removed", []string{own}, nil, true},
		{"other added", []string{own}, []string{own, "x/y"}, true},
		{"own appended and other removed", []string{"x/y"}, []string{own}, true},
	} {
		if got := finalizersChangedByOthers(c.old, c.cur); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}
