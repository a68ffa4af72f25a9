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
	// handed are the keys the Handoff announced, so the watch's create
	// event, arriving after their first pass, does not count them again.
	handed map[types.NamespacedName]time.Time
	// firstPass runs after a key's first pass (Handoff.Created's after).
	firstPass map[types.NamespacedName]func()
	// clear runs once no key waits, or holdFor after it was queued.
	clear      []func()
	clearTimer *time.Timer
}

func (u *unisolated) add(key types.NamespacedName) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.addLocked(key)
}

func (u *unisolated) addLocked(key types.NamespacedName) {
	if u.keys == nil {
		u.keys = map[types.NamespacedName]struct{}{}
	}
	u.keys[key] = struct{}{}
}

// hand adds key on the Handoff's word, ahead of the watch.
func (u *unisolated) hand(key types.NamespacedName) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.addLocked(key)
	if u.handed == nil {
		u.handed = map[types.NamespacedName]time.Time{}
	}
	now := time.Now()
	pruneStale(u.handed, now, func(at time.Time) time.Time { return at })
	u.handed[key] = now
}

// afterFirstPass queues f for key's first pass: it then runs once no
// other key waits.
func (u *unisolated) afterFirstPass(key types.NamespacedName, f func()) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.firstPass == nil {
		u.firstPass = map[types.NamespacedName]func(){}
	}
	u.firstPass[key] = f
}

func (u *unisolated) done(key types.NamespacedName) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.keys, key)
	if f, ok := u.firstPass[key]; ok {
		delete(u.firstPass, key)
		u.clear = append(u.clear, f)
		if u.clearTimer == nil {
			u.clearTimer = time.AfterFunc(holdFor, u.runClear)
		}
	}
	if len(u.keys) == 0 && len(u.clear) > 0 {
		go u.runClear()
	}
}

// abandon forgets a key the Handoff announced but that was not created
// (under that name, or at all as far as the creator knows: the watch counts
// it if it was).
func (u *unisolated) abandon(key types.NamespacedName) {
	u.mu.Lock()
	delete(u.handed, key)
	u.mu.Unlock()
	u.done(key)
}

// runClear runs the queued callbacks, outside the lock.
func (u *unisolated) runClear() {
	u.mu.Lock()
	fs := u.clear
	u.clear = nil
	if u.clearTimer != nil {
		u.clearTimer.Stop()
		u.clearTimer = nil
	}
	u.mu.Unlock()
	for _, f := range fs {
		f()
	}
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
// (no phase: the manager's initial list of settled ones does not count)
// and that the Handoff did not announce; it lets every event through.
func (u *unisolated) noteCreated() predicate.Funcs {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool {
			if q, ok := e.Object.(*securityv1alpha1.Quarantine); ok && q.Status.Phase == "" && q.DeletionTimestamp.IsZero() {
				key := types.NamespacedName{Namespace: q.Namespace, Name: q.Name}
				u.mu.Lock()
				if _, handed := u.handed[key]; handed {
					delete(u.handed, key) // counted when handed over
				} else {
					u.addLocked(key)
				}
				u.mu.Unlock()
			}
			return true
		},
	}
}
