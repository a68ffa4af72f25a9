package quarantine

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func states(ss ...securityv1alpha1.ActionState) []securityv1alpha1.ActionStatus {
	out := make([]securityv1alpha1.ActionStatus, len(ss))
	for i, s := range ss {
		out[i] = securityv1alpha1.ActionStatus{Type: securityv1alpha1.ActionIsolate, State: s}
	}
	return out
}

func TestPhaseRule(t *testing.T) {
	const (
		ap = securityv1alpha1.ActionApplied
		rf = securityv1alpha1.ActionRefused
		fl = securityv1alpha1.ActionFailed
		pe = securityv1alpha1.ActionPending
	)
	for _, c := range []struct {
		in   []securityv1alpha1.ActionStatus
		want securityv1alpha1.QuarantinePhase
	}{
		{nil, securityv1alpha1.PhaseContaining},
		{states(ap), securityv1alpha1.PhaseContained},
		{states(ap, rf), securityv1alpha1.PhaseContained},
		{states(ap, pe), securityv1alpha1.PhaseContaining},
		{states(rf, rf), securityv1alpha1.PhaseFailed},
		{states(rf, fl), securityv1alpha1.PhaseFailed},
		{states(ap, fl), securityv1alpha1.PhaseContained},
		{states(ap, ap, rf), securityv1alpha1.PhaseContained}, // CordonNode held, the rest refused on a gone pod
	} {
		if got := phaseOf(c.in); got != c.want {
			t.Errorf("phaseOf(%v) = %s, want %s", c.in, got, c.want)
		}
	}
}

func TestNeedsRevertRule(t *testing.T) {
	for s, want := range map[securityv1alpha1.ActionState]bool{
		securityv1alpha1.ActionApplied: true, securityv1alpha1.ActionPending: true, securityv1alpha1.ActionFailed: true,
		securityv1alpha1.ActionRefused: false, securityv1alpha1.ActionReverted: false, securityv1alpha1.ActionNotReverted: false,
	} {
		if got := needsRevert(securityv1alpha1.ActionStatus{State: s}); got != want {
			t.Errorf("%s: %v, want %v", s, got, want)
		}
	}
}

func TestEarlierHolderRule(t *testing.T) {
	t0 := metav1.NewTime(time.Unix(100, 0))
	mk := func(name string, ts metav1.Time, phase securityv1alpha1.QuarantinePhase, released bool) securityv1alpha1.Quarantine {
		return securityv1alpha1.Quarantine{
			ObjectMeta: metav1.ObjectMeta{Name: name, UID: k8stypes.UID("uid-" + name), CreationTimestamp: ts},
			Spec:       securityv1alpha1.QuarantineSpec{Target: securityv1alpha1.Target{Name: "pod"}, Released: &released},
			Status:     securityv1alpha1.QuarantineStatus{Phase: phase},
		}
	}
	later := metav1.NewTime(t0.Add(time.Second))
	unapproved := func(q securityv1alpha1.Quarantine) securityv1alpha1.Quarantine {
		q.Spec.Approved = new(false)
		return q
	}
	q := mk("b", t0, "", false)
	cases := []struct {
		others []securityv1alpha1.Quarantine
		want   string
	}{
		{[]securityv1alpha1.Quarantine{mk("a", t0, securityv1alpha1.PhaseContained, false)}, "a"}, // same second: name decides
		{[]securityv1alpha1.Quarantine{mk("c", t0, "", false)}, ""},
		{[]securityv1alpha1.Quarantine{mk("z", metav1.NewTime(t0.Add(-time.Second)), "", false)}, "z"},
		{[]securityv1alpha1.Quarantine{mk("a", t0, securityv1alpha1.PhaseFailed, false)}, ""},
		{[]securityv1alpha1.Quarantine{mk("a", t0, securityv1alpha1.PhaseContained, true)}, ""},
		{[]securityv1alpha1.Quarantine{mk("a", later, "", false)}, ""},
		{[]securityv1alpha1.Quarantine{unapproved(mk("a", t0, securityv1alpha1.PhasePending, false))}, ""}, // holds nothing
	}
	for i, c := range cases {
		if got := earlierHolder(&q, append(c.others, q)); got != c.want {
			t.Errorf("case %d: got %q, want %q", i, got, c.want)
		}
	}
}

// Release undoes what status says was applied (issue 14 item 10): an action
// missing from spec is still reverted, with spec's parameters when present.
func TestAppliedActionsComeFromStatus(t *testing.T) {
	q := &securityv1alpha1.Quarantine{
		Spec: securityv1alpha1.QuarantineSpec{Actions: []securityv1alpha1.Action{
			{Type: securityv1alpha1.ActionIsolate},
			{Type: securityv1alpha1.ActionDetach, Detach: &securityv1alpha1.DetachParams{OnRelease: "Keep"}},
		}},
		Status: securityv1alpha1.QuarantineStatus{Actions: []securityv1alpha1.ActionStatus{
			{Type: securityv1alpha1.ActionIsolate, State: securityv1alpha1.ActionApplied},
			{Type: securityv1alpha1.ActionScaleToZero, State: securityv1alpha1.ActionApplied},
			{Type: securityv1alpha1.ActionDetach, State: securityv1alpha1.ActionApplied},
		}},
	}
	got := appliedActions(q)
	if len(got) != 3 || got[0].Type != securityv1alpha1.ActionIsolate || got[1].Type != securityv1alpha1.ActionScaleToZero || got[2].Type != securityv1alpha1.ActionDetach {
		t.Fatalf("applied actions %+v: want Isolate, ScaleToZero (gone from spec), Detach in status order", got)
	}
	if got[2].Detach == nil || got[2].Detach.OnRelease != "Keep" {
		t.Fatalf("Detach lost its spec parameters: %+v", got[2])
	}
}

// listReader answers List with fixed Quarantines and counts the calls.
type listReader struct {
	client.Reader
	items []securityv1alpha1.Quarantine
	calls int
}

func (l *listReader) List(_ context.Context, list client.ObjectList, _ ...client.ListOption) error {
	l.calls++
	list.(*securityv1alpha1.QuarantineList).Items = append([]securityv1alpha1.Quarantine(nil), l.items...)
	return nil
}

// TestSameTargetReadsLiveWhenTheCacheShowsAnother: the cache answers alone
// only when q is the one Quarantine for its target; any other one is read
// live, so whether it still holds is not judged on a stale copy (a cached
// holder released meanwhile would otherwise fail q and free the pod).
func TestSameTargetReadsLiveWhenTheCacheShowsAnother(t *testing.T) {
	mk := func(name string, released bool) securityv1alpha1.Quarantine {
		return securityv1alpha1.Quarantine{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: k8stypes.UID("uid-" + name), CreationTimestamp: metav1.NewTime(time.Unix(100, 0))},
			Spec:       securityv1alpha1.QuarantineSpec{Target: securityv1alpha1.Target{Name: "pod"}, Released: &released},
		}
	}
	q := mk("b", false)
	otherPod := func(o securityv1alpha1.Quarantine) securityv1alpha1.Quarantine {
		o.Spec.Target.Name = "another-pod"
		return o
	}
	cases := []struct {
		name       string
		cached     []securityv1alpha1.Quarantine
		live       []securityv1alpha1.Quarantine
		wantLive   int
		wantHolder string
	}{
		{"alone in the cache", []securityv1alpha1.Quarantine{q}, nil, 0, ""},
		{"others in the cache hold other pods", []securityv1alpha1.Quarantine{otherPod(mk("a", false)), q}, nil, 0, ""},
		{"an earlier one cached and live", []securityv1alpha1.Quarantine{mk("a", false), q}, []securityv1alpha1.Quarantine{mk("a", false), q}, 1, "a"},
		{"cached as holding, released live", []securityv1alpha1.Quarantine{mk("a", false), q}, []securityv1alpha1.Quarantine{mk("a", true), q}, 1, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cached, live := &listReader{items: c.cached}, &listReader{items: c.live}
			r := &QuarantineReconciler{APIReader: live, cachedHolders: cached}
			list, err := r.sameTarget(context.Background(), &q)
			if err != nil {
				t.Fatal(err)
			}
			if live.calls != c.wantLive {
				t.Errorf("%d live lists, want %d", live.calls, c.wantLive)
			}
			if got := earlierHolder(&q, list); got != c.wantHolder {
				t.Errorf("earlier holder %q, want %q", got, c.wantHolder)
			}
		})
	}
}
