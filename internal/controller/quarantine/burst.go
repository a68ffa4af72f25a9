package quarantine

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// holdFor bounds how long a Quarantine's other actions wait for the
// isolation of newer ones: a steady stream of new Quarantines must not hold
// them for ever.
const holdFor = 10 * time.Second

// unisolated counts the Quarantines seen created whose first pass has not
// run yet. While there are any, the actions that follow isolation (scale,
// evict, cordon, label, detach: their writes, and the pod deletions a
// scale-down sets off) wait, so a burst isolates every target before the
// API server spends itself on the rest (issue 17).
type unisolated struct {
	mu   sync.Mutex
	keys map[types.NamespacedName]struct{}
}

func (u *unisolated) add(key types.NamespacedName) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.keys == nil {
		u.keys = map[types.NamespacedName]struct{}{}
	}
	u.keys[key] = struct{}{}
}

func (u *unisolated) done(key types.NamespacedName) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.keys, key)
}

// others reports whether a Quarantine other than key awaits its first pass.
func (u *unisolated) others(key types.NamespacedName) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, self := u.keys[key]
	n := len(u.keys)
	if self {
		n--
	}
	return n > 0
}

// noteCreated records each Quarantine created that no pass has seen yet
// (no phase: the manager's initial list of settled ones does not count);
// it lets every event through.
func (u *unisolated) noteCreated() predicate.Funcs {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool {
			if q, ok := e.Object.(*securityv1alpha1.Quarantine); ok && q.Status.Phase == "" && q.DeletionTimestamp.IsZero() {
				u.add(types.NamespacedName{Namespace: q.Namespace, Name: q.Name})
			}
			return true
		},
	}
}
