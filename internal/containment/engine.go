// Package containment applies and reverts Bulkhead's containment actions.
// Each action type is one file implementing Action (isolate.go, detach.go,
// scale.go, cordon.go, evict.go, label.go), registered in Builtin; the
// Engine dispatches through the registry only. It holds no controller
// plumbing: the Quarantine controller calls Plan, Apply and Revert per action
// and persists the ActionStatus they fill in.
//
// Crash safety: every change to an object Bulkhead does not own carries, in
// the same write, the marker needed to undo it (a label, or an annotation on
// the changed object), so a manager killed between any two writes resumes
// from what the cluster says, not from memory.
package containment

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// Annotations Bulkhead puts on objects it changes but does not own. They are
// the undo record, written in the same request as the change.
const (
	// HoldersAnnotation lists the Quarantines (namespace/name) holding a
	// workload scaled to zero or a cordoned node.
	HoldersAnnotation = "security.bulkhead.dev/holders"
	// OriginalReplicasAnnotation is the replica count (or Job/CronJob suspend
	// value) before the first holder scaled the workload.
	OriginalReplicasAnnotation = "security.bulkhead.dev/original-replicas"
	// OriginalSuspendAnnotation is a Job's or CronJob's spec.suspend before
	// the first holder suspended it.
	OriginalSuspendAnnotation = "security.bulkhead.dev/original-suspend"
	// WasCordonedAnnotation records whether a node was unschedulable before
	// Bulkhead cordoned it.
	WasCordonedAnnotation = "security.bulkhead.dev/was-cordoned"
	// KeepCordonedAnnotation is set by an administrator who cordons a node
	// Bulkhead already holds (kubectl cordon is then a no-op, so the intent
	// is otherwise invisible): release leaves the node unschedulable.
	KeepCordonedAnnotation = "security.bulkhead.dev/keep-cordoned"
	// AddedLabelsAnnotation / AddedAnnotationsAnnotation list the keys the
	// Label action added to a pod.
	AddedLabelsAnnotation      = "security.bulkhead.dev/added-labels"
	AddedAnnotationsAnnotation = "security.bulkhead.dev/added-annotations"
	// DetachedLabelsAnnotation keeps the owner-selector labels Detach removed.
	DetachedLabelsAnnotation = "security.bulkhead.dev/detached-labels"
)

// ErrTargetNotFound means the target does not exist, or a new object with
// the same name replaced the one recorded at creation.
var ErrTargetNotFound = errors.New("target not found")

// Engine applies and reverts actions.
type Engine struct {
	// Client writes; its RESTMapper resolves owner kinds.
	Client client.Client
	// Reader reads fresh state (the manager's API reader): decisions on
	// holders and markers must not be taken on a stale cache.
	Reader client.Reader
	// MinSchedulableNodes is the floor CordonNode never goes below.
	MinSchedulableNodes int
	// Now is the clock; tests may pin it.
	Now func() time.Time
	// Actions dispatched by type; nil means Builtin.
	Actions Registry
	// Served remembers which third-party deny kinds are served; nil: asked
	// every time.
	Served *ServedKinds
}

func (e *Engine) now() metav1.Time {
	if e.Now != nil {
		return metav1.NewTime(e.Now())
	}
	return metav1.Now()
}

// Scope is one Quarantine as its actions see it.
type Scope struct {
	Q *securityv1alpha1.Quarantine
	// Target is nil when the target is gone (after ScaleToZero or Evict, or
	// deleted by someone); reverts then work from the status alone.
	Target *Target
	// isolated: Isolate made the isolating writes in this pass, so Apply
	// need not repeat or re-read them.
	isolated bool
	// IsolatedEarlier: an earlier pass made the isolating writes without
	// recording them (a burst defers status), so this pass checks them
	// against the cache instead of writing them blindly.
	IsolatedEarlier bool
}

// Holder is how this Quarantine is named in holders lists.
func (s *Scope) Holder() string { return s.Q.Namespace + "/" + s.Q.Name }

// Outcome says what Apply or Revert did.
type Outcome struct {
	// Changed is true when the cluster was written.
	Changed bool
	// Repaired is true when an action already Applied had to be re-applied:
	// someone tampered with it.
	Repaired bool
}

// Actions is the registry dispatched to; nil means Builtin.
func (e *Engine) actions() Registry {
	if e.Actions != nil {
		return e.Actions
	}
	return Builtin()
}

// Traits of an action type; false when the type is unknown.
func (e *Engine) Traits(t securityv1alpha1.ActionType) (Traits, bool) {
	act, ok := e.actions()[t]
	if !ok {
		return Traits{}, false
	}
	return act.Traits(), true
}

// Plan records, before any write, which resource an action will change
// (see Action.Plan). It writes nothing.
func (e *Engine) Plan(s *Scope, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) {
	st.Type, st.State = a.Type, securityv1alpha1.ActionPending
	if act, ok := e.actions()[a.Type]; ok {
		act.Plan(s, a, st)
		return
	}
	planPod(s, st)
}

// Apply makes one action true in the cluster, or refreshes it, filling st.
// It writes nothing when the cluster already matches.
func (e *Engine) Apply(ctx context.Context, s *Scope, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	st.Type = a.Type
	was := st.State
	var (
		o   Outcome
		err error
	)
	if act, ok := e.actions()[a.Type]; ok {
		o, err = act.Apply(ctx, e, s, a, st)
	} else {
		st.State, st.Message = securityv1alpha1.ActionRefused, fmt.Sprintf("unknown action type %q", a.Type)
	}
	st.Message = kubeutil.Truncate(st.Message, kubeutil.MaxMessage)
	if err != nil {
		return o, err
	}
	if st.State == securityv1alpha1.ActionApplied {
		if st.AppliedAt == nil {
			t := e.now()
			st.AppliedAt = &t
		}
		o.Repaired = o.Changed && was == securityv1alpha1.ActionApplied
	}
	return o, nil
}

// Isolate makes an action's isolating writes ahead of the rest of the pass
// when it has any (see Isolator); otherwise it does nothing. Apply must
// still follow in the same pass: it records the state.
func (e *Engine) Isolate(ctx context.Context, s *Scope, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	act, ok := e.actions()[a.Type].(Isolator)
	if !ok {
		return Outcome{}, nil
	}
	return act.Isolate(ctx, e, s, a, st)
}

// Revert undoes one action. Reverts are driven by the markers in the
// cluster, so they are safe to repeat and to run after a partial apply.
func (e *Engine) Revert(ctx context.Context, s *Scope, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	st.Type = a.Type
	var (
		o   Outcome
		err error
	)
	if act, ok := e.actions()[a.Type]; ok {
		o, err = act.Revert(ctx, e, s, a, st)
	}
	st.Message = kubeutil.Truncate(st.Message, kubeutil.MaxMessage)
	if err == nil && st.State == securityv1alpha1.ActionReverted && st.RevertedAt == nil {
		t := e.now()
		st.RevertedAt = &t
	}
	return o, err
}

// Live reports whether a Quarantine (namespace, name) still holds what it did.
type Live func(ctx context.Context, namespace, name string) (bool, error)

// RemoveLeftovers cleans cluster-scoped changes no live Quarantine holds,
// action by action (in type order), and returns how many objects it changed.
func (e *Engine) RemoveLeftovers(ctx context.Context, live Live) (int, error) {
	reg := e.actions()
	n := 0
	for _, t := range slices.Sorted(maps.Keys(reg)) {
		m, err := reg[t].Leftovers(ctx, e, live)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Permanent reports errors retrying cannot fix: the action is Failed.
// Forbidden is not one: a tenant's quota or a webhook can deny for a while.
func Permanent(err error) bool {
	return apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)
}

// holders parses a holders annotation.
func holders(annotations map[string]string) []string {
	v := annotations[HoldersAnnotation]
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// withHolder and withoutHolder return the sorted holders list as an
// annotation value ("" when empty).
func withHolder(list []string, h string) string {
	if !slices.Contains(list, h) {
		list = append(slices.Clone(list), h)
	}
	slices.Sort(list)
	return strings.Join(list, ",")
}

func withoutHolder(list []string, h string) string {
	out := slices.DeleteFunc(slices.Clone(list), func(x string) bool { return x == h })
	slices.Sort(out)
	return strings.Join(out, ",")
}

// lockedPatch is a merge patch that fails on a concurrent change: holders
// lists and taints are read-modify-write.
func lockedPatch(obj client.Object) client.Patch {
	return client.MergeFromWithOptions(obj, client.MergeFromWithOptimisticLock{})
}
