package containment

import (
	"context"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// Action is one containment action type. The Engine dispatches to it through
// a Registry; adding an action is one file implementing Action and one line
// in Builtin.
type Action interface {
	// Traits say how a pass may order the action.
	Traits() Traits
	// Plan records in st, before any write, which resource Apply will
	// change, so release finds it even if the manager dies right after the
	// change and the target disappears. It writes nothing.
	Plan(s *Scope, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus)
	// Apply makes the action true in the cluster, or refreshes it, filling
	// st. It writes nothing when the cluster already matches.
	Apply(ctx context.Context, e *Engine, s *Scope, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error)
	// Revert undoes the action from the markers in the cluster, so it is
	// safe to repeat and to run after a partial Apply. A change someone made
	// meanwhile is left alone and reported as NotReverted.
	Revert(ctx context.Context, e *Engine, s *Scope, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error)
	// Leftovers removes the cluster-scoped changes of this action that no
	// live Quarantine holds (a Quarantine deleted while the manager was
	// down); namespaced ones go with their owner. It returns how many
	// objects it changed.
	Leftovers(ctx context.Context, e *Engine, live Live) (int, error)
}

// Isolator is an Isolating action whose isolating writes a pass makes
// before anything else (evidence persistence, Events, other actions). Apply
// later in the same pass does the rest and skips what Isolate wrote.
type Isolator interface {
	// Isolate makes only the writes that cut the target's traffic. It
	// records nothing in st: Apply in the same pass does.
	Isolate(ctx context.Context, e *Engine, s *Scope, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error)
}

// Traits describe an action for ordering a containment pass.
type Traits struct {
	// Isolating actions cut the target's traffic; they are the ones worth
	// running before anything else.
	Isolating bool
	// Destructive actions remove the target's pods (the pod, or all of them
	// with the workload), so nothing can be read from them afterwards.
	Destructive bool
	// NeedsPersistedEvidence: the evidence must be in status (or its
	// Secret) before the action runs, because the action changes or
	// removes what the evidence records.
	NeedsPersistedEvidence bool
}

// Registry holds the actions by type.
type Registry map[securityv1alpha1.ActionType]Action

// Builtin is every action Bulkhead ships.
func Builtin() Registry {
	return Registry{
		securityv1alpha1.ActionIsolate:     isolate{},
		securityv1alpha1.ActionDetach:      detach{},
		securityv1alpha1.ActionScaleToZero: scale{},
		securityv1alpha1.ActionCordonNode:  cordon{},
		securityv1alpha1.ActionEvict:       evict{},
		securityv1alpha1.ActionLabel:       label{},
	}
}

// podAction is the default of actions that change the target pod itself:
// they plan that pod and leave nothing cluster-scoped behind.
type podAction struct{}

func (podAction) Plan(s *Scope, _ securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) {
	planPod(s, st)
}

func (podAction) Leftovers(context.Context, *Engine, Live) (int, error) { return 0, nil }

func planPod(s *Scope, st *securityv1alpha1.ActionStatus) {
	if s.Target != nil {
		st.Resource, st.ResourceAPIVersion = "Pod/"+s.Q.Spec.Target.Name, "v1"
	}
}
