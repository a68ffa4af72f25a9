package quarantine

import (
	"fmt"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// crashCase is one action set and what "contained" means for it.
type crashCase struct {
	name    string
	actions []securityv1alpha1.Action
	// consumed: the target pod cannot come back (evicted, or deleted as a
	// forensic copy), so it is left out of the before/after comparison.
	consumed bool
	check    func(t *testing.T, f *fixture)
}

func crashCases() []crashCase {
	isolated := func(t *testing.T, f *fixture) {
		if getPod(t, f.pods[0]).Labels[securityv1alpha1.QuarantineLabel] != "qc" {
			t.Fatal("pod not labelled")
		}
		must(t, direct.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "bulkhead-qc"}, &networkingv1.NetworkPolicy{}))
	}
	scaled := func(t *testing.T, f *fixture) {
		if replicas(t, f) != 0 {
			t.Fatal("not scaled to zero")
		}
	}
	cordoned := func(t *testing.T, f *fixture) {
		if n := node(t, f.node); !n.Spec.Unschedulable || !tainted(n) {
			t.Fatal("node not cordoned")
		}
	}
	labelled := func(t *testing.T, f *fixture) {
		if getPod(t, f.pods[0]).Labels["forensics"] != "hold" {
			t.Fatal("label not added")
		}
	}
	detached := func(t *testing.T, f *fixture) {
		if _, ok := getPod(t, f.pods[0]).Labels["app"]; ok {
			t.Fatal("not detached")
		}
	}
	evicted := func(t *testing.T, f *fixture) {
		if p := getPod(t, f.pods[0]); p != nil && p.DeletionTimestamp.IsZero() {
			t.Fatal("not evicted")
		}
	}
	return []crashCase{
		{name: "Isolate", actions: []securityv1alpha1.Action{isolateDNS()}, check: isolated},
		{name: "ScaleToZero", actions: []securityv1alpha1.Action{act(securityv1alpha1.ActionScaleToZero)}, check: scaled},
		{name: "CordonNode", actions: []securityv1alpha1.Action{act(securityv1alpha1.ActionCordonNode)}, check: cordoned},
		{name: "Label", actions: []securityv1alpha1.Action{labelAction()}, check: labelled},
		{name: "Detach", actions: []securityv1alpha1.Action{isolateDNS(), {Type: securityv1alpha1.ActionDetach}}, consumed: true, check: detached},
		{name: "Evict", actions: []securityv1alpha1.Action{isolateDNS(), act(securityv1alpha1.ActionEvict)}, consumed: true, check: evicted},
		{name: "All", actions: []securityv1alpha1.Action{isolateDNS(), labelAction(), act(securityv1alpha1.ActionScaleToZero), act(securityv1alpha1.ActionCordonNode)},
			check: func(t *testing.T, f *fixture) { isolated(t, f); labelled(t, f); scaled(t, f); cordoned(t, f) }},
	}
}

// TestCrashAtEveryWrite kills the manager after its k-th write, for every k
// of a full contain-and-release run: a fresh reconciler converges, and after
// release the cluster is exactly as before.
func TestCrashAtEveryWrite(t *testing.T) {
	for _, c := range crashCases() {
		t.Run(c.name, func(t *testing.T) {
			total := crashRun(t, c, -1)
			if total < 3 {
				t.Fatalf("a full run made only %d writes", total)
			}
			for k := range total {
				t.Run(fmt.Sprintf("k=%d", k), func(t *testing.T) { crashRun(t, c, k) })
			}
		})
	}
}

// TestReleaseRightAfterCrashAtEveryWrite: the manager dies after its k-th
// write and the Quarantine is released before any other pass runs. The
// isolating writes come before the first status patch, so status may not
// record them; release must still leave the cluster exactly as before
// (fails when release undoes only what status records).
func TestReleaseRightAfterCrashAtEveryWrite(t *testing.T) {
	for _, c := range crashCases() {
		if c.name != "Isolate" && c.name != "All" {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			total := crashRun(t, c, -1)
			for k := range total {
				t.Run(fmt.Sprintf("k=%d", k), func(t *testing.T) { crashRunReleasing(t, c, k, true) })
			}
		})
	}
}

// crashRun contains and releases with a manager that dies after failAfter
// writes (never, when negative), then lets a fresh one finish, and returns
// the dying manager's write count.
func crashRun(t *testing.T, c crashCase, failAfter int64) int64 {
	return crashRunReleasing(t, c, failAfter, false)
}

// crashRunReleasing is crashRun; with releaseAtOnce the Quarantine is
// released right after the crash, before the fresh manager contains.
func crashRunReleasing(t *testing.T, c crashCase, failAfter int64, releaseAtOnce bool) int64 {
	f := newFixture(t, 2)
	skip := ""
	if c.consumed {
		skip = f.pods[0].Name
	}
	before := f.snapshotExcept(t, skip)
	key := f.quarantine(t, "qc", f.pods[0].Name, c.actions...)

	w := &writes{failAfter: failAfter}
	dying, _ := newReconciler(w.client())
	releaseAsked := false
	for range 30 {
		_, err := dying.Reconcile(ctx, reqFor(key))
		if failAfter >= 0 && w.n.Load() > failAfter {
			break // the manager is dead
		}
		q := getQ(t, key)
		if err == nil && !releaseAsked && q.Status.Phase == securityv1alpha1.PhaseContained {
			release(t, key)
			releaseAsked = true
		}
		if released(q) {
			break
		}
	}

	fresh, _ := newReconciler(direct)
	if !releaseAsked && releaseAtOnce {
		release(t, key)
		releaseAsked = true
	}
	if !releaseAsked {
		drive(t, fresh, key, phaseIs(securityv1alpha1.PhaseContained))
		c.check(t, f)
		release(t, key)
	}
	q := drive(t, fresh, key, released)
	for _, st := range q.Status.Actions {
		want := securityv1alpha1.ActionReverted
		if st.Type == securityv1alpha1.ActionEvict {
			want = securityv1alpha1.ActionNotReverted
		}
		if st.State != want {
			t.Fatalf("after a crash at write %d: %s is %s, want %s: %+v", failAfter+1, st.Type, st.State, want, st)
		}
	}
	if after := f.snapshotExcept(t, skip); after != before {
		t.Fatalf("after a crash at write %d the cluster is not as before:\nbefore %s\nafter %s", failAfter+1, before, after)
	}
	return w.n.Load()
}
