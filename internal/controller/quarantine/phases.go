package quarantine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
)

// pass is one reconcile of one Quarantine.
type pass struct {
	r     *QuarantineReconciler
	q     *securityv1alpha1.Quarantine
	base  *securityv1alpha1.Quarantine
	e     *containment.Engine
	scope *containment.Scope
	now   metav1.Time
	// dropFinalizer is set once everything is undone.
	dropFinalizer bool
	// evidence is the pod as it was, snapshotted before any write and not
	// yet in status.
	evidence *snapshot
	// resolving is the target being read while validateTarget lists its
	// holders; resolveTarget takes it.
	resolving chan resolved
	// applied are the Events of actions Applied in this pass, sent once its
	// status is persisted unless the pass reached Contained (that Event
	// names every action's state).
	applied []string
	// deferred is what an earlier pass in a burst left (evidence.go).
	deferred *deferred
	// noStatus: this pass leaves status unwritten (deferStatus).
	noStatus bool
	// isolatedNow: this pass made isolating writes; isolatedEarly: from the
	// cached pod, ahead of the live reads (isolateEarly).
	isolatedNow, isolatedEarly bool
	// earlyTarget is the cached pod isolateEarly isolated, for a later
	// pass that finds it gone.
	earlyTarget *securityv1alpha1.ResolvedTarget
}

// resolved is what Engine.Resolve returned.
type resolved struct {
	t   *containment.Target
	err error
}

// afterIsolation is the queue priority of the rest of a containment whose
// target is isolated: below new Quarantines (0), above the initial list's
// (-100).
const afterIsolation = -1

// maxRecordedPods is the API's bound on status.target.pods.
const maxRecordedPods = 1000

// step is one ordered part of a pass; stop ends the pass without error.
type step func(ctx context.Context, p *pass) (res ctrl.Result, stop bool, err error)

func (r *QuarantineReconciler) newPass(q *securityv1alpha1.Quarantine) *pass {
	return &pass{r: r, q: q, base: q.DeepCopy(), e: r.engine(), scope: &containment.Scope{Q: q}, now: metav1.NewTime(r.now())}
}

func (p *pass) run(ctx context.Context, steps []step) (ctrl.Result, error) {
	var res ctrl.Result
	for _, s := range steps {
		r, stop, err := s(ctx, p)
		if err != nil {
			return ctrl.Result{}, err
		}
		if r.RequeueAfter > 0 {
			res = r
		}
		if stop {
			break
		}
	}
	p.q.Status.ObservedGeneration = p.q.Generation
	return res, nil
}

func (r *QuarantineReconciler) containSteps() []step {
	return []step{reportRecommendations, stopWhenSettled, holdBehindIsolation, takeDeferred, validateTarget, resolveTarget, captureEvidence, awaitApproval, resolveSafeguards, planActions, isolateFirst, deferStatus, persistEvidence, applyActions, summarize}
}

func (r *QuarantineReconciler) releaseSteps() []step {
	return []step{markReleasing, resolveForRelease, revertActions, finishRelease}
}

// stopWhenSettled: Failed and (expired) Released wait for release or deletion.
func stopWhenSettled(_ context.Context, p *pass) (ctrl.Result, bool, error) {
	ph := p.q.Status.Phase
	return ctrl.Result{}, ph == securityv1alpha1.PhaseFailed || ph == securityv1alpha1.PhaseReleased, nil
}

// validateTarget refuses protected namespaces and a second Quarantine for a
// target, once, before anything is done.
func validateTarget(ctx context.Context, p *pass) (ctrl.Result, bool, error) {
	q := p.q
	if q.Status.Phase != "" && q.Status.Phase != securityv1alpha1.PhasePending {
		return ctrl.Result{}, false, nil
	}
	if slices.Contains(securityv1alpha1.AlwaysProtectedNamespaces, q.Namespace) || q.Namespace == p.r.ManagerNamespace {
		p.fail(securityv1alpha1.ReasonProtectedNamespace, fmt.Sprintf("namespace %s is protected: Bulkhead never contains workloads there", q.Namespace))
		return ctrl.Result{}, true, nil
	}
	if refused, err := p.refuseProtected(ctx); err != nil || refused {
		return ctrl.Result{}, refused, err
	}
	list, err := p.r.sameTarget(ctx, q)
	if err != nil {
		return ctrl.Result{}, false, err
	}
	if holder := earlierHolder(q, list); holder != "" {
		p.fail(securityv1alpha1.ReasonTargetAlreadyQuarantined, fmt.Sprintf("%s %s is already held by Quarantine %s", kubeutil.TargetKind(q.Spec.Target), q.Spec.Target.Name, holder))
		return ctrl.Result{}, true, nil
	}
	early := p.cachedPod(ctx)
	burst := early != nil && p.r.stash != nil && p.othersAwaitIsolation()
	if !burst {
		p.resolve(ctx)
	}
	if early != nil {
		if burst {
			p.snapshotCached(ctx, early)
		}
		p.earlyTarget = &securityv1alpha1.ResolvedTarget{UID: string(early.UID), Node: early.Spec.NodeName}
		if err := p.isolateEarly(ctx, early); err != nil {
			return ctrl.Result{}, false, err
		}
		if burst && p.isolatedNow {
			// Isolated with no read: status, evidence and the rest come
			// once no new Quarantine awaits its first pass.
			return p.deferRest()
		}
	}
	p.resolve(ctx)
	return ctrl.Result{}, false, nil
}

// resolve starts reading the target live (the pod, its owners), once per
// pass; resolveTarget joins.
func (p *pass) resolve(ctx context.Context) {
	if p.resolving != nil {
		return
	}
	p.resolving = make(chan resolved, 1)
	go func() {
		t, err := p.e.Resolve(ctx, p.q)
		p.resolving <- resolved{t, err}
	}()
}

// cachedPod returns the target pod from the cache when a first pass of an
// approved Quarantine for a pod can isolate it before the live reads
// return, or nil.
func (p *pass) cachedPod(ctx context.Context) *corev1.Pod {
	q := p.q
	if p.r.podCache == nil || q.Status.Phase != "" || !kubeutil.IsPodTarget(q.Spec.Target) || !q.IsApproved() {
		return nil
	}
	if !slices.ContainsFunc(q.Spec.Actions, func(a securityv1alpha1.Action) bool { tr, _ := p.e.Traits(a.Type); return tr.Isolating }) {
		return nil
	}
	pod := &corev1.Pod{}
	if err := p.r.podCache.Get(ctx, client.ObjectKey{Namespace: q.Namespace, Name: q.Spec.Target.Name}, pod); err != nil || !pod.DeletionTimestamp.IsZero() {
		return nil // the live read decides
	}
	return pod
}

// isolateEarly makes the isolating writes for the cached pod: the
// NetworkPolicy and the pod label are all isolation needs, and the live
// reads of the pod and its owners (evidence, the other actions) would put
// two round trips ahead of them. The evidence snapshot read meanwhile drops
// the quarantine label this puts on the pod (snapshotEvidence), so it still
// shows the pod as it was; nothing else changes it before it is persisted.
func (p *pass) isolateEarly(ctx context.Context, pod *corev1.Pod) error {
	target := &containment.Target{UID: string(pod.UID), Pods: []corev1.Pod{*pod}, Node: pod.Spec.NodeName}
	p.scope.Target = target
	defer func() {
		if p.scope.Target == target {
			p.scope.Target = nil // resolveTarget puts the live one
		}
	}()
	for _, a := range p.q.Spec.Actions {
		if tr, _ := p.e.Traits(a.Type); !tr.Isolating {
			continue
		}
		st := securityv1alpha1.ActionStatus{}
		p.e.Plan(p.scope, a, &st)
		if err := p.isolate(ctx, a, &st); err != nil {
			return err
		}
	}
	p.isolatedEarly = p.isolatedNow
	return nil
}

// isolate makes one action's isolating writes. An error that retrying
// cannot fix is left to applyActions, which records the action Failed.
func (p *pass) isolate(ctx context.Context, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) error {
	_, err := p.e.Isolate(ctx, p.scope, a, st)
	if err != nil && !containment.Permanent(err) {
		p.alertForbidden(a.Type, err)
		return fmt.Errorf("%s: %w", a.Type, err)
	}
	p.isolatedNow = p.isolatedNow || err == nil
	return nil
}

// sameTarget lists the Quarantines naming q's target. From the cache first
// (the namespace's, filtered in memory without copies): it holds every
// Quarantine created before q, since the event of q's creation came after
// theirs on the same watch. Only when it shows another one is the answer
// read live, selected by the API server (spec.target.name is a selectable
// field: a live list of the namespace made every new Quarantine cost
// O(Quarantines) in a burst), so whether that one still holds (released,
// approved meanwhile) is as fresh as without the cache.
func (r *QuarantineReconciler) sameTarget(ctx context.Context, q *securityv1alpha1.Quarantine) ([]securityv1alpha1.Quarantine, error) {
	if r.cachedHolders != nil {
		list := &securityv1alpha1.QuarantineList{}
		if err := r.cachedHolders.List(ctx, list, client.InNamespace(q.Namespace), client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		other := slices.ContainsFunc(list.Items, func(o securityv1alpha1.Quarantine) bool {
			return o.Spec.Target.Name == q.Spec.Target.Name && o.UID != q.UID
		})
		if !other {
			return []securityv1alpha1.Quarantine{*q.DeepCopy()}, nil
		}
	}
	list := &securityv1alpha1.QuarantineList{}
	if err := r.APIReader.List(ctx, list, client.InNamespace(q.Namespace),
		client.MatchingFields{securityv1alpha1.TargetNameField: q.Spec.Target.Name}); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// resolveTarget finds the target, recording its uid the first time. A
// target missing at creation fails the Quarantine; one gone later (scaled
// away, evicted) leaves it as it is.
func resolveTarget(ctx context.Context, p *pass) (ctrl.Result, bool, error) {
	var r resolved
	if p.resolving != nil {
		r = <-p.resolving
		p.resolving = nil
	} else {
		r.t, r.err = p.e.Resolve(ctx, p.q)
	}
	t, err := r.t, r.err
	switch {
	case errors.Is(err, containment.ErrTargetNotFound):
		if p.q.Status.Target == nil {
			if d := p.deferred; d != nil && d.target != nil && d.isolatedAt != nil {
				// Gone since a burst's first pass isolated it: a target
				// gone later, with its isolation and evidence recorded.
				p.q.Status.Target = d.target
				p.audit(containment.Actor, "TargetResolved", fmt.Sprintf("%s %s uid %s, gone since its isolation", kubeutil.TargetKind(p.q.Spec.Target), p.q.Spec.Target.Name, d.target.UID))
				return ctrl.Result{}, false, nil
			}
			p.fail(securityv1alpha1.ReasonTargetNotFound, err.Error())
			return ctrl.Result{}, true, nil
		}
		return ctrl.Result{}, false, nil
	case err != nil:
		return ctrl.Result{}, false, err
	}
	p.scope.Target = t
	if p.q.Status.Target == nil {
		rt := &securityv1alpha1.ResolvedTarget{UID: t.UID, Node: t.Node}
		if t.Workload != nil {
			rt.Owner = t.Workload.String()
		}
		if kubeutil.TargetKind(p.q.Spec.Target) != securityv1alpha1.TargetPod {
			for _, pod := range t.Pods[:min(len(t.Pods), maxRecordedPods)] {
				rt.Pods = append(rt.Pods, pod.Name)
			}
		}
		p.q.Status.Target = rt
		p.audit(containment.Actor, "TargetResolved", fmt.Sprintf("%s %s uid %s", kubeutil.TargetKind(p.q.Spec.Target), p.q.Spec.Target.Name, t.UID))
	}
	return ctrl.Result{}, false, nil
}

// captureEvidence snapshots the pod as it was, in memory, before any write
// and even while unapproved; persistEvidence writes it once the target is
// isolated. A capture that fails is recorded and never blocks containment
// (evidence.go).
func captureEvidence(ctx context.Context, p *pass) (ctrl.Result, bool, error) {
	if p.q.Status.Evidence != nil {
		return ctrl.Result{}, false, nil
	}
	if p.scope.Target == nil || len(p.scope.Target.Pods) == 0 {
		p.deferredSnapshotOfGonePod()
		return ctrl.Result{}, false, nil
	}
	p.snapshotEvidence(ctx)
	return ctrl.Result{}, false, nil
}

// persistEvidence puts the snapshot into status (spilling it into its
// Secret when large); the status patch that follows persists it. While
// other Quarantines await their first pass it keeps the snapshot for a
// later pass instead: the Secret write and the Event and log reads would
// delay their isolation.
func persistEvidence(ctx context.Context, p *pass) (ctrl.Result, bool, error) {
	if p.evidence != nil && !p.deferEvidence() {
		p.persistSnapshot(ctx)
	}
	return ctrl.Result{}, false, nil
}

// evidenceInThisPass reports whether the evidence waiting to reach the API
// is in this pass's status (not still being gathered, nor deferred).
func (p *pass) evidenceInThisPass() bool {
	return p.evidence == nil && !p.r.stash.has(p.q.UID, false) && p.q.Status.Evidence != nil
}

// evidencePersisted reports whether no evidence waits to reach the API.
func (p *pass) evidencePersisted() bool {
	return p.evidence == nil && !p.r.stash.has(p.q.UID, false) && equality.Semantic.DeepEqual(p.base.Status.Evidence, p.q.Status.Evidence)
}

// awaitApproval keeps an unapproved Quarantine Pending with nothing applied;
// past its approvalTimeout it expires.
func awaitApproval(ctx context.Context, p *pass) (ctrl.Result, bool, error) {
	q := p.q
	if q.IsApproved() {
		return ctrl.Result{}, false, nil
	}
	// Nothing will be written but status: the evidence goes in now.
	if p.evidence != nil {
		p.persistSnapshot(ctx)
	}
	if q.Spec.ApprovalTimeout != nil {
		left := q.CreationTimestamp.Add(q.Spec.ApprovalTimeout.Duration).Sub(p.now.Time)
		if left <= 0 {
			q.Status.Phase, q.Status.ReleasedAt = securityv1alpha1.PhaseReleased, &p.now
			p.setNotReady("ApprovalExpired", "not approved within "+q.Spec.ApprovalTimeout.Duration.String()+"; nothing was applied")
			p.audit(containment.Actor, "ApprovalExpired", "nothing was applied")
			p.dropFinalizer = true
			return ctrl.Result{}, true, nil
		}
		q.Status.Phase = securityv1alpha1.PhasePending
		p.setNotReady(securityv1alpha1.ReasonAwaitingApproval, "waiting for approval; nothing is applied")
		return ctrl.Result{RequeueAfter: left}, true, nil
	}
	q.Status.Phase = securityv1alpha1.PhasePending
	p.setNotReady(securityv1alpha1.ReasonAwaitingApproval, "waiting for approval; nothing is applied")
	return ctrl.Result{}, true, nil
}

// resolveSafeguards raises the CordonNode floor to the one the Quarantine
// carries (stamped by its policies at creation, or set by hand); without
// one the flag's applies. Policies themselves are never read here.
func resolveSafeguards(_ context.Context, p *pass) (ctrl.Result, bool, error) {
	if s := p.q.Spec.Safeguards; s != nil && s.MinSchedulableNodes != nil && int(*s.MinSchedulableNodes) > p.e.MinSchedulableNodes {
		p.e.MinSchedulableNodes = int(*s.MinSchedulableNodes)
	}
	return ctrl.Result{}, false, nil
}

// reportRecommendations shows the escalations the policies wrote into the
// spec in status, whatever the phase: this controller is status's only writer.
func reportRecommendations(_ context.Context, p *pass) (ctrl.Result, bool, error) {
	if len(p.q.Spec.Recommendations) == 0 {
		// Policies only ever add; one written here before keeps its own.
		return ctrl.Result{}, false, nil
	}
	p.q.Status.Recommendations = nil
	for i := range p.q.Spec.Recommendations {
		p.q.Status.Recommendations = append(p.q.Status.Recommendations, *p.q.Spec.Recommendations[i].DeepCopy())
	}
	return ctrl.Result{}, false, nil
}

// planActions records the intent (which resource each action will change)
// and persists it before any action writes, so a crash right after a change
// is undone. When something will isolate first, nothing is written ahead of
// the isolating writes: the Quarantine itself is their intent (release
// undoes an isolating action its spec names even when status never
// recorded it, revertActions), and the plan reaches the API with the
// pass's status patch, before any other action writes. Otherwise the
// evidence rides along with the intent.
func planActions(ctx context.Context, p *pass) (ctrl.Result, bool, error) {
	planned := false
	for _, a := range p.q.Spec.Actions {
		if p.actionStatus(a.Type) != nil {
			continue
		}
		st := securityv1alpha1.ActionStatus{}
		p.e.Plan(p.scope, a, &st)
		if err := p.checkGuard(ctx, a, &st); err != nil {
			return ctrl.Result{}, false, err
		}
		p.q.Status.Actions = append(p.q.Status.Actions, st)
		planned = true
	}
	if !planned {
		return ctrl.Result{}, false, nil
	}
	if p.q.Status.Phase != securityv1alpha1.PhaseContaining {
		p.q.Status.Phase = securityv1alpha1.PhaseContaining
		p.audit(containment.Actor, "Containing", "actions planned: "+actionList(p.q.Spec.Actions))
	}
	p.setNotReady(securityv1alpha1.ReasonProgressing, "applying actions")
	if len(p.isolating()) > 0 {
		return ctrl.Result{}, false, nil
	}
	if p.evidence != nil {
		p.persistSnapshot(ctx)
	}
	return ctrl.Result{}, false, p.flush(ctx)
}

// isolating returns the actions whose isolating writes are still to be
// made: Isolating, with a target, and Pending (a first pass, or one after
// a crash). Applied ones are refreshed by applyActions.
func (p *pass) isolating() []securityv1alpha1.Action {
	if p.scope.Target == nil {
		return nil
	}
	var out []securityv1alpha1.Action
	for _, a := range p.q.Spec.Actions {
		tr, _ := p.e.Traits(a.Type)
		if st := p.actionStatus(a.Type); tr.Isolating && (st == nil || st.State == securityv1alpha1.ActionPending) {
			out = append(out, a)
		}
	}
	return out
}

// takeDeferred picks up what an earlier pass in a burst left.
func takeDeferred(_ context.Context, p *pass) (ctrl.Result, bool, error) {
	p.deferred = p.r.stash.take(p.q.UID)
	p.scope.IsolatedEarlier = p.deferred != nil && p.deferred.isolatedAt != nil
	return ctrl.Result{}, false, nil
}

// deferStatus ends a first pass that isolated its target while other new
// Quarantines await their first pass: its status write (and everything
// after) would take the API server from their isolation, so it comes in a
// later pass, which records when the target was isolated. The evidence
// snapshot waits with it.
func deferStatus(_ context.Context, p *pass) (ctrl.Result, bool, error) {
	if !p.isolatedNow || p.r.stash == nil || p.base.Status.Phase != "" || !p.othersAwaitIsolation() {
		return ctrl.Result{}, false, nil
	}
	return p.deferRest()
}

// deferRest ends a pass that made only the isolating writes, leaving its
// status unwritten: the stash keeps the evidence snapshot and when the
// target was first isolated (an earlier deferred pass's time and snapshot
// win) for the pass that records them.
func (p *pass) deferRest() (ctrl.Result, bool, error) {
	d := &deferred{evidence: p.evidence, isolatedAt: &p.now, target: p.earlyTarget}
	if p.q.Status.Target != nil {
		d.target = p.q.Status.Target.DeepCopy()
	}
	if prev := p.deferred; prev != nil {
		if d.evidence == nil {
			d.evidence = prev.evidence
		}
		if prev.isolatedAt != nil {
			d.isolatedAt = prev.isolatedAt
		}
		if prev.target != nil {
			d.target = prev.target
		}
	}
	p.evidence = nil
	p.r.stash.put(p.q.UID, d)
	p.noStatus = true
	return holdResult(), true, nil
}

// isolateFirst makes the isolating writes (the NetworkPolicy and the pod
// label, at once) right after the intent, ahead of evidence, Events, audit
// detail, third-party denies and the other actions, unless isolateEarly
// made them already.
func isolateFirst(ctx context.Context, p *pass) (ctrl.Result, bool, error) {
	if p.isolatedEarly {
		return ctrl.Result{}, false, nil
	}
	for _, a := range p.isolating() {
		if err := p.isolate(ctx, a, p.actionStatus(a.Type)); err != nil {
			return ctrl.Result{}, false, err
		}
	}
	return ctrl.Result{}, false, nil
}

// applyActions applies each action in order. Refused and Failed actions are
// final; the others are re-applied every pass, which repairs tampering.
func applyActions(ctx context.Context, p *pass) (ctrl.Result, bool, error) {
	for _, a := range p.q.Spec.Actions {
		st := p.actionStatus(a.Type)
		if st.State == securityv1alpha1.ActionRefused || st.State == securityv1alpha1.ActionFailed {
			continue
		}
		tr, _ := p.e.Traits(a.Type)
		if !tr.Isolating && st.State == securityv1alpha1.ActionPending && p.othersAwaitIsolation() {
			// Behind the isolation of the Quarantines created meanwhile.
			return holdResult(), true, nil
		}
		if tr.NeedsPersistedEvidence && !p.evidencePersisted() && p.evidenceInThisPass() && !p.othersAwaitIsolation() {
			// The evidence is in this pass's status: persist it now and go
			// on, rather than a whole pass (two reads) later.
			if err := p.flush(ctx); err != nil {
				return ctrl.Result{}, false, err
			}
			st = p.actionStatus(a.Type) // the patch replaced status
		}
		if tr.NeedsPersistedEvidence && !p.evidencePersisted() {
			// What the action changes or removes is what the evidence
			// shows: this pass's status patch persists it, and the rest
			// comes back behind the Quarantines still waiting to be
			// isolated, so a burst isolates every target before it scales
			// or evicts any.
			return ctrl.Result{RequeueAfter: time.Millisecond, Priority: ptr.To(afterIsolation)}, true, nil
		}
		was := *st.DeepCopy()
		o, err := p.e.Apply(ctx, p.scope, a, st)
		switch {
		case errors.Is(err, containment.ErrEvictionBlocked):
			p.event(corev1.EventTypeWarning, "EvictionBlocked", "Evict", err.Error())
			return ctrl.Result{}, false, err
		case err != nil && containment.Permanent(err):
			st.State, st.Message = securityv1alpha1.ActionFailed, kubeutil.Truncate(err.Error(), kubeutil.MaxMessage)
		case err != nil:
			p.alertForbidden(a.Type, err)
			return ctrl.Result{}, false, fmt.Errorf("%s: %w", a.Type, err)
		}
		if o.Repaired {
			msg := fmt.Sprintf("%s on %s was undone by someone; repaired", a.Type, st.Resource)
			p.event(corev1.EventTypeWarning, "Tampered", "Repair", msg)
			p.audit(containment.Actor, "Tampered", msg)
		}
		if st.State != was.State {
			if d := p.deferred; d != nil && d.isolatedAt != nil && tr.Isolating && st.State == securityv1alpha1.ActionApplied {
				// Isolated by an earlier pass of a burst that left status
				// for later (deferStatus).
				st.AppliedAt = d.isolatedAt.DeepCopy()
				p.audit(containment.Actor, "IsolatedEarlier", fmt.Sprintf("%s took effect at %s, recorded after the burst", a.Type, d.isolatedAt.UTC().Format(time.RFC3339Nano)))
			}
			msg := p.recordTransition(st)
			// On the Quarantine only: the pod gets the outcome (Contained,
			// Failed), not one Event per action, which halves the Events a
			// burst of containments writes.
			if st.State == securityv1alpha1.ActionApplied {
				p.applied = append(p.applied, string(a.Type), msg)
			} else {
				p.quarantineEvent(corev1.EventTypeWarning, string(a.Type)+string(st.State), string(a.Type), msg)
			}
		}
	}
	return ctrl.Result{}, false, nil
}

// holdBehindIsolation ends, before any read, a pass that would only apply
// the actions following isolation while other Quarantines await theirs:
// held passes come back often, and each read per pass would add up.
func holdBehindIsolation(_ context.Context, p *pass) (ctrl.Result, bool, error) {
	q := p.q
	if p.r.stash.has(q.UID, true) && p.othersAwaitIsolation() {
		return p.hold() // isolated; status waits (deferStatus)
	}
	if q.Status.Phase != securityv1alpha1.PhaseContaining || (q.Status.Evidence == nil && !p.r.stash.has(q.UID, false)) || !p.othersAwaitIsolation() {
		return ctrl.Result{}, false, nil
	}
	pending := false
	for _, a := range q.Spec.Actions {
		st := p.actionStatus(a.Type)
		if st == nil {
			return ctrl.Result{}, false, nil // to be planned
		}
		tr, _ := p.e.Traits(a.Type)
		if tr.Isolating && st.State == securityv1alpha1.ActionPending {
			return ctrl.Result{}, false, nil
		}
		pending = pending || st.State == securityv1alpha1.ActionPending
	}
	if !pending && q.Status.Evidence != nil {
		return ctrl.Result{}, false, nil
	}
	return p.hold()
}

// hold ends a pass that waits for other Quarantines' isolation without a
// write: it changed nothing, and even a status patch of observedGeneration
// alone is a request the API server then serves ahead of their isolation.
func (p *pass) hold() (ctrl.Result, bool, error) {
	p.noStatus = true
	return holdResult(), true, nil
}

func holdResult() ctrl.Result {
	return ctrl.Result{RequeueAfter: 250 * time.Millisecond, Priority: ptr.To(afterIsolation)}
}

// othersAwaitIsolation reports whether other Quarantines wait for their
// first pass, for at most holdFor after this one was created.
func (p *pass) othersAwaitIsolation() bool {
	w := p.r.waiting
	if w == nil || p.now.Sub(p.q.CreationTimestamp.Time) > holdFor {
		return false
	}
	return w.others(client.ObjectKeyFromObject(p.q))
}

// summarize derives phase and conditions, checks isolation and schedules
// the periodic re-check.
func summarize(ctx context.Context, p *pass) (ctrl.Result, bool, error) {
	q := p.q
	phase := phaseOf(q.Status.Actions)
	deferred := p.r.stash.has(q.UID, false)
	if deferred && phase == securityv1alpha1.PhaseContained {
		// Contained once the evidence is persisted too.
		phase = securityv1alpha1.PhaseContaining
	}
	switch phase {
	case securityv1alpha1.PhaseFailed:
		p.fail(securityv1alpha1.ReasonNothingApplied, "no action could be applied: "+refusals(q.Status.Actions))
		return ctrl.Result{}, true, nil
	case securityv1alpha1.PhaseContained:
		if q.Status.Phase != securityv1alpha1.PhaseContained {
			p.audit(containment.Actor, "Contained", actionList(q.Spec.Actions))
			p.event(corev1.EventTypeNormal, "Contained", "Contain", "contained: "+summary(q.Status.Actions))
		}
		if q.Status.ContainedAt == nil {
			q.Status.ContainedAt = &p.now
		}
	}
	q.Status.Phase = phase
	if err := p.checkIsolation(ctx); err != nil {
		return ctrl.Result{}, false, err
	}
	p.setConditions()
	if deferred {
		return holdResult(), false, nil
	}
	if phase != securityv1alpha1.PhaseContained {
		return ctrl.Result{}, false, nil
	}
	return ctrl.Result{RequeueAfter: kubeutil.Jitter(p.r.Recheck)}, false, nil
}

// checkIsolation reports other policies that still admit the pod.
func (p *pass) checkIsolation(ctx context.Context) error {
	st := p.actionStatus(securityv1alpha1.ActionIsolate)
	if st == nil || st.State != securityv1alpha1.ActionApplied || p.scope.Target == nil {
		return nil
	}
	gaps, err := p.e.IsolationGaps(ctx, p.scope)
	if err != nil {
		return err
	}
	prec, err := p.e.ThirdPartyPrecedence(ctx, p.scope)
	if err != nil {
		return err
	}
	kernel := p.kernelEnforcement(st)
	c := isolationCondition(gaps, prec, kernel, len(p.scope.Target.Pods))
	c.ObservedGeneration = p.q.Generation
	if apimeta.SetStatusCondition(&p.q.Status.Conditions, c) && c.Status == metav1.ConditionFalse {
		p.event(corev1.EventTypeWarning, "IsolationIneffective", "Isolate", c.Message)
	}
	v := 0.0
	if c.Status == metav1.ConditionFalse {
		v = 1
	}
	metrics.IsolationIneffective.WithLabelValues(p.q.Namespace, p.q.Name).Set(v)
	return nil
}

func markReleasing(ctx context.Context, p *pass) (ctrl.Result, bool, error) {
	q := p.q
	if d := p.r.stash.take(q.UID); d != nil && d.evidence != nil {
		// Released in a burst before its evidence was persisted.
		p.evidence = d.evidence
		p.evidence.ownersFromPod()
		p.persistSnapshot(ctx)
	}
	switch q.Status.Phase {
	case securityv1alpha1.PhaseReleased:
		p.dropFinalizer = true
		return ctrl.Result{}, true, nil
	case securityv1alpha1.PhaseReleasing:
	default:
		q.Status.Phase = securityv1alpha1.PhaseReleasing
		how := "released"
		if !q.DeletionTimestamp.IsZero() {
			how = "deleted"
		}
		p.audit(actorOf(q), "Releasing", "Quarantine "+how)
	}
	return ctrl.Result{}, false, nil
}

func resolveForRelease(ctx context.Context, p *pass) (ctrl.Result, bool, error) {
	if p.q.Status.Target == nil {
		return ctrl.Result{}, false, nil
	}
	t, err := p.e.Resolve(ctx, p.q)
	if err != nil && !errors.Is(err, containment.ErrTargetNotFound) {
		return ctrl.Result{}, false, err
	}
	p.scope.Target = t
	return ctrl.Result{}, false, nil
}

// revertActions undoes, in reverse order, what status says was applied, not
// what spec asks for now: an action dropped from spec (where the API server
// let it be) must still be undone. An isolating action that status never
// recorded is undone too: its writes come before the first status patch
// (isolateFirst), so a manager that died in between left them unrecorded;
// its revert only touches what carries this Quarantine's name.
func revertActions(ctx context.Context, p *pass) (ctrl.Result, bool, error) {
	if err := p.revertUnrecorded(ctx); err != nil {
		return ctrl.Result{}, false, err
	}
	acts := appliedActions(p.q)
	for i := len(acts) - 1; i >= 0; i-- {
		st := p.actionStatus(acts[i].Type)
		if st == nil || !needsRevert(*st) {
			continue
		}
		was := st.State
		// Revert on a copy: a revert whose last write fails (a conflict on a
		// busy node or workload) must not be recorded as Reverted, or the
		// status patched at the end of this failed pass skips it for good.
		next := st.DeepCopy()
		if _, err := p.e.Revert(ctx, p.scope, acts[i], next); err != nil {
			return ctrl.Result{}, false, fmt.Errorf("reverting %s: %w", acts[i].Type, err)
		}
		*st = *next
		if st.State != was {
			p.recordTransition(st)
		}
	}
	return ctrl.Result{}, false, nil
}

// revertUnrecorded reverts the spec's isolating actions that status does
// not record, and records those that changed something as Reverted.
func (p *pass) revertUnrecorded(ctx context.Context) error {
	for _, a := range p.q.Spec.Actions {
		if tr, _ := p.e.Traits(a.Type); !tr.Isolating || p.actionStatus(a.Type) != nil {
			continue
		}
		st := securityv1alpha1.ActionStatus{Type: a.Type, State: securityv1alpha1.ActionPending}
		p.e.Plan(p.scope, a, &st)
		o, err := p.e.Revert(ctx, p.scope, a, &st)
		if err != nil {
			return fmt.Errorf("reverting unrecorded %s: %w", a.Type, err)
		}
		if o.Changed {
			p.q.Status.Actions = append(p.q.Status.Actions, st)
			p.recordTransition(&p.q.Status.Actions[len(p.q.Status.Actions)-1])
		}
	}
	return nil
}

// appliedActions are the actions status records, in status order, each with
// its spec (parameters such as Detach's keepForensicCopy) when spec still
// has it.
func appliedActions(q *securityv1alpha1.Quarantine) []securityv1alpha1.Action {
	out := make([]securityv1alpha1.Action, 0, len(q.Status.Actions))
	for _, st := range q.Status.Actions {
		a := securityv1alpha1.Action{Type: st.Type}
		for _, s := range q.Spec.Actions {
			if s.Type == st.Type {
				a = s
			}
		}
		out = append(out, a)
	}
	return out
}

func finishRelease(_ context.Context, p *pass) (ctrl.Result, bool, error) {
	q := p.q
	q.Status.Phase, q.Status.ReleasedAt = securityv1alpha1.PhaseReleased, &p.now
	p.setConditions()
	p.audit(containment.Actor, "Released", summary(q.Status.Actions))
	p.event(corev1.EventTypeNormal, "Released", "Release", "released: "+summary(q.Status.Actions))
	metrics.IsolationIneffective.DeleteLabelValues(q.Namespace, q.Name)
	p.dropFinalizer = true
	if q.DeletionTimestamp.IsZero() && p.r.ReleasedRetention > 0 {
		return ctrl.Result{RequeueAfter: p.r.ReleasedRetention}, false, nil
	}
	return ctrl.Result{}, false, nil
}

// recordTransition counts an action reaching a new state and audits it,
// returning the audit message.
func (p *pass) recordTransition(st *securityv1alpha1.ActionStatus) string {
	metrics.ActionsTotal.WithLabelValues(string(st.Type), string(st.State)).Inc()
	msg := fmt.Sprintf("%s %s %s", st.Type, strings.ToLower(string(st.State)), st.Resource)
	if st.Message != "" {
		msg += ": " + st.Message
	}
	p.audit(containment.Actor, string(st.State), msg)
	return msg
}

// flush patches status now (the intent record) and rebases the pass.
func (p *pass) flush(ctx context.Context) error {
	p.q.Status.ObservedGeneration = p.q.Generation
	if err := p.r.patchStatus(ctx, p); err != nil {
		return err
	}
	p.base = p.q.DeepCopy()
	return nil
}

func (p *pass) actionStatus(t securityv1alpha1.ActionType) *securityv1alpha1.ActionStatus {
	for i := range p.q.Status.Actions {
		if p.q.Status.Actions[i].Type == t {
			return &p.q.Status.Actions[i]
		}
	}
	return nil
}

// fail ends the Quarantine: nothing was applied, so nothing is reverted.
func (p *pass) fail(reason, msg string) {
	p.q.Status.Phase = securityv1alpha1.PhaseFailed
	p.setNotReady(reason, msg)
	apimeta.SetStatusCondition(&p.q.Status.Conditions, metav1.Condition{Type: securityv1alpha1.ConditionStalled, Status: metav1.ConditionTrue, Reason: reason, Message: kubeutil.Truncate(msg, kubeutil.MaxMessage), ObservedGeneration: p.q.Generation})
	apimeta.RemoveStatusCondition(&p.q.Status.Conditions, securityv1alpha1.ConditionReconciling)
	p.audit(containment.Actor, "Failed", reason+": "+msg)
	p.event(corev1.EventTypeWarning, reason, "Contain", msg)
}

func (p *pass) audit(actor, event, msg string) {
	containment.AppendAudit(&p.q.Status, p.now, actor, event, msg)
}

// appliedEvents sends the Events of the actions this pass applied, after
// its status patch; none when the pass reached Contained, whose Event
// lists them (one Event fewer per containment in a burst).
func (p *pass) appliedEvents() {
	if p.q.Status.Phase == securityv1alpha1.PhaseContained && p.base.Status.Phase != securityv1alpha1.PhaseContained {
		return
	}
	for i := 0; i+1 < len(p.applied); i += 2 {
		p.quarantineEvent(corev1.EventTypeNormal, p.applied[i]+string(securityv1alpha1.ActionApplied), p.applied[i], p.applied[i+1])
	}
}

// quarantineEvent is recorded on the Quarantine only.
func (p *pass) quarantineEvent(etype, reason, action, msg string) {
	if p.r.Recorder != nil {
		p.r.Recorder.Eventf(p.q, nil, etype, reason, action, "%s", msg)
	}
}

// event is recorded on the Quarantine and, when there is one, on the pod.
func (p *pass) event(etype, reason, action, msg string) {
	if p.r.Recorder == nil {
		return
	}
	var pod *corev1.Pod
	if p.scope.Target != nil && kubeutil.TargetKind(p.q.Spec.Target) == securityv1alpha1.TargetPod && len(p.scope.Target.Pods) == 1 {
		pod = &p.scope.Target.Pods[0]
	}
	if pod == nil {
		p.r.Recorder.Eventf(p.q, nil, etype, reason, action, "%s", msg)
		return
	}
	p.r.Recorder.Eventf(p.q, pod, etype, reason, action, "%s", msg)
	p.r.Recorder.Eventf(pod, p.q, etype, reason, action, "Quarantine %s: %s", p.q.Name, msg)
}

func actorOf(q *securityv1alpha1.Quarantine) string {
	if a := q.Annotations[securityv1alpha1.ActorAnnotation]; a != "" {
		return a
	}
	return "unknown"
}

func actionList(as []securityv1alpha1.Action) string {
	names := make([]string, len(as))
	for i, a := range as {
		names[i] = string(a.Type)
	}
	return strings.Join(names, ", ")
}

func summary(sts []securityv1alpha1.ActionStatus) string {
	parts := make([]string, len(sts))
	for i, s := range sts {
		parts[i] = string(s.Type) + "=" + string(s.State)
	}
	return strings.Join(parts, ", ")
}

func refusals(sts []securityv1alpha1.ActionStatus) string {
	parts := make([]string, 0, len(sts))
	for _, s := range sts {
		parts = append(parts, fmt.Sprintf("%s: %s", s.Type, s.Message))
	}
	return strings.Join(parts, "; ")
}
