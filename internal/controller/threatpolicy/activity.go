package threatpolicy

import (
	"context"
	"slices"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// maxPlans is how many plans a policy's status keeps.
const maxPlans = 50

// Activity is what a policy's status reports that only the running manager
// knows: when each detector's signal was last evaluated by it (from
// detection), its last trigger and its plans (from the per-pod decision).
// A change asks, once until the status is written, for a reconcile.
type Activity struct {
	// Policies names each policy whose status is due (a source.Channel).
	Policies chan event.GenericEvent

	mu       sync.Mutex
	policies map[string]*policyState
}

type policyState struct {
	dirty       bool
	lastSignal  map[string]time.Time
	lastTrigger *securityv1alpha1.Trigger
	plans       []securityv1alpha1.Plan
}

// NewActivity returns an empty Activity.
func NewActivity() *Activity {
	return &Activity{Policies: make(chan event.GenericEvent, 1024), policies: map[string]*policyState{}}
}

func (a *Activity) state(name string) *policyState {
	st := a.policies[name]
	if st == nil {
		st = &policyState{lastSignal: map[string]time.Time{}}
		a.policies[name] = st
	}
	return st
}

// Evaluated records that policy evaluated a signal of det at at. It waits
// while the queue is full: evaluation runs on the ingest path, which should
// slow down rather than lose a status update.
func (a *Activity) Evaluated(ctx context.Context, policy, det string, at time.Time) {
	a.mu.Lock()
	a.state(policy).lastSignal[det] = at
	a.mu.Unlock()
	if a.due(policy) {
		select {
		case a.Policies <- policyEvent(policy):
		case <-ctx.Done():
		}
	}
}

// AddPlan records a plan for a policy's status.
func (a *Activity) AddPlan(name string, plan securityv1alpha1.Plan) {
	a.mu.Lock()
	st := a.state(name)
	st.plans = addPlan(st.plans, plan)
	if len(st.plans) > maxPlans {
		st.plans = st.plans[len(st.plans)-maxPlans:]
	}
	a.mu.Unlock()
	a.touch(name)
}

// SetTrigger records the last threshold crossing of a policy.
func (a *Activity) SetTrigger(name string, t securityv1alpha1.Trigger) {
	a.mu.Lock()
	a.state(name).lastTrigger = &t
	a.mu.Unlock()
	a.touch(name)
}

// due marks the policy's status as due; true when it was not already.
func (a *Activity) due(name string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.state(name)
	was := st.dirty
	st.dirty = true
	return !was
}

// touch asks for the policy's status to be written.
func (a *Activity) touch(name string) {
	if a.due(name) {
		// Never block a reconciler on a full channel: the periodic resync
		// writes the status anyway.
		select {
		case a.Policies <- policyEvent(name):
		default:
		}
	}
}

func policyEvent(name string) event.GenericEvent {
	return event.GenericEvent{Object: &securityv1alpha1.ThreatPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}}
}

// Snapshot is what the Activity knows for a policy's status.
type Snapshot struct {
	LastSignal  map[string]time.Time
	LastTrigger *securityv1alpha1.Trigger
	// Plans not yet written to status.
	Plans []securityv1alpha1.Plan
}

// TakeSnapshot returns and clears pending plans; Restore puts them back when
// the status write failed.
func (a *Activity) TakeSnapshot(name string) Snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.state(name)
	st.dirty = false
	s := Snapshot{LastSignal: make(map[string]time.Time, len(st.lastSignal)), LastTrigger: st.lastTrigger, Plans: st.plans}
	for k, v := range st.lastSignal {
		s.LastSignal[k] = v
	}
	st.plans = nil
	return s
}

// Restore puts back plans a failed status write did not persist.
func (a *Activity) Restore(name string, plans []securityv1alpha1.Plan) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.state(name)
	st.plans = append(plans, st.plans...)
}

// Forget drops what is held for a deleted policy.
func (a *Activity) Forget(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.policies, name)
}

// addPlan appends plan, dropping an older plan for the same pod: a hot pod
// re-planned on every signal must not push every other pod out.
func addPlan(plans []securityv1alpha1.Plan, plan securityv1alpha1.Plan) []securityv1alpha1.Plan {
	plans = slices.DeleteFunc(plans, func(p securityv1alpha1.Plan) bool {
		return p.Namespace == plan.Namespace && p.Pod == plan.Pod
	})
	return append(plans, plan)
}
