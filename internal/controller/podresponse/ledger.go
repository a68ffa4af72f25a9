package podresponse

import (
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// ledger holds the writes this controller made, or is making, that the
// cache may not show yet: new Quarantines and policies joining existing
// ones. They count against budgets and the cluster cap until the cache
// shows them, or two quick decisions could both take the last slot.
type ledger struct {
	mu      sync.Mutex
	creates map[types.NamespacedName]pendingWrite
	joins   map[types.NamespacedName]pendingWrite
}

type pendingWrite struct {
	pod string
	// policies of the new Quarantine, or the ones joining.
	policies []string
	at       time.Time
	// cordon: the new Quarantine carries CordonNode (maxCordonedNodes).
	cordon bool
}

// unseenGrace bounds how long a write is counted without the cache showing
// it (the object may have been deleted before the cache saw it, or a
// create that timed out may never have happened).
const unseenGrace = time.Minute

func (l *ledger) create(key types.NamespacedName, pod string, policies []string, now time.Time, cordon bool) {
	l.record(&l.creates, key, pendingWrite{pod: pod, policies: slices.Clone(policies), at: now, cordon: cordon})
}

func (l *ledger) join(key types.NamespacedName, pod string, policies []string, now time.Time) {
	l.record(&l.joins, key, pendingWrite{pod: pod, policies: slices.Clone(policies), at: now})
}

func (l *ledger) record(m *map[types.NamespacedName]pendingWrite, key types.NamespacedName, w pendingWrite) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if *m == nil {
		*m = map[types.NamespacedName]pendingWrite{}
	}
	(*m)[key] = w
}

// dropCreate gives back the slot of a create the API server refused.
func (l *ledger) dropCreate(key types.NamespacedName) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.creates, key)
}

// creating reports whether a Quarantine for the pod is created, or being
// created, and the cache does not show it yet.
func (l *ledger) creating(namespace, pod string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, w := range l.creates {
		if key.Namespace == namespace && w.pod == pod {
			return true
		}
	}
	return false
}

// taken reports whether a name is held by a create in flight.
func (l *ledger) taken(key types.NamespacedName) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.creates[key]
	return ok
}

// count adds the writes the listed Quarantines do not show yet to env and
// forgets those they show, or that are older than unseenGrace. Only the
// decision (under decideMu) may call it: forgetting an entry between
// another decision's list and its count would hide a slot from it.
func (l *ledger) count(listed map[types.NamespacedName]*securityv1alpha1.Quarantine, env *policy.Env) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, w := range l.creates {
		// The name alone is not proof: someone else's Quarantine may hold
		// the name this create is about to find taken.
		if q := listed[key]; (q != nil && q.Spec.Target.Name == w.pod) || env.Now.Sub(w.at) > unseenGrace {
			delete(l.creates, key)
			continue
		}
		env.ActiveTotal++
		if env.Pod != nil && key.Namespace == env.Pod.Namespace {
			env.ActiveTotalInNamespace++
		}
		for _, p := range w.policies {
			env.ActiveByPolicy[p]++
			countShares(env, key.Namespace, p, w.cordon)
		}
	}
	for key, w := range l.joins {
		q := listed[key]
		if q == nil || q.IsReleased() || env.Now.Sub(w.at) > unseenGrace {
			delete(l.joins, key)
			continue
		}
		var shown []string
		if q.Spec.Reason != nil {
			shown = q.Spec.Reason.Policies
		}
		missing := 0
		for _, p := range w.policies {
			if !slices.Contains(shown, p) {
				env.ActiveByPolicy[p]++
				countShares(env, key.Namespace, p, false)
				missing++
			}
		}
		if missing == 0 {
			delete(l.joins, key)
		}
	}
}

// countShares adds a pending write of policy p in namespace ns to the
// namespace share and cordon counts (maps nil in tests of the budget only).
func countShares(env *policy.Env, ns, p string, cordon bool) {
	if env.ActiveInNamespace != nil && env.Pod != nil && ns == env.Pod.Namespace {
		env.ActiveInNamespace[p]++
	}
	if cordon && env.Cordons != nil {
		env.Cordons[p]++
	}
}
