package podresponse

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// Issue 17: the decisions of a burst are carried out in parallel, each
// waiting on its own create only. With 32 workers each create held one, and
// the 200th decision of make bench's burst waited 2.7 s in the queue for a
// worker. Here every create of the burst is held until all of them have
// arrived (or 5 s passed): all must arrive.
func TestBurstDecisionsCreateInParallel(t *testing.T) {
	const n = 40 // more than the 32 workers there were
	pods := make([]string, n)
	for i := range pods {
		pods[i] = fmt.Sprintf("burst-%d", i)
	}
	ns := newNamespace(t, pods...)
	newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Detectors = []securityv1alpha1.DetectorWeight{{Name: "my-model", Weight: 1}}
		s.Safeguards.MaxActiveQuarantines = 10000
	})
	var mu sync.Mutex
	inFlight, most := 0, 0
	all := make(chan struct{})
	gate := func(q *securityv1alpha1.Quarantine) {
		if q.Namespace != ns {
			return
		}
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		if inFlight == n {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-time.After(5 * time.Second):
		}
		mu.Lock()
		inFlight--
		mu.Unlock()
	}
	createGate.Store(&gate)
	t.Cleanup(func() { createGate.Store(nil) })

	scores := make([]map[string]any, n)
	for i, p := range pods {
		scores[i] = map[string]any{"namespace": ns, "pod": p, "detector": "my-model", "score": 0.99}
	}
	b, _ := json.Marshal(scores)
	post(t, "/v1/scores", "application/json", b, nil, http.StatusAccepted)
	eventually(t, func() error {
		if got := len(quarantines(t, ns)); got != n {
			return fmt.Errorf("%d of %d Quarantines", got, n)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if most != n {
		t.Fatalf("at most %d of the burst's %d creates were in flight together: decisions queued behind other decisions' creates", most, n)
	}
	t.Cleanup(func() { releaseAll(t, ns) })
}

// releaseAll releases every Quarantine in ns, so they stop counting against
// the suite's cluster-wide cap.
func releaseAll(t testing.TB, ns string) {
	for _, q := range quarantines(t, ns) {
		patch := client.MergeFrom(q.DeepCopy())
		released := true
		q.Spec.Released = &released
		if err := k8s.Patch(context.Background(), &q, patch); err != nil {
			t.Errorf("releasing %s: %v", q.Name, err)
		}
	}
}

// Issue 17: a pod with new triggers goes ahead of the Quarantine events
// (auto-release timers) waiting in the queue.
func TestTriggersGoFirstInTheQueue(t *testing.T) {
	q := priorityqueue.New[reconcile.Request]("decision-first")
	defer q.ShutDown()
	for i := range 3 {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "web", Name: fmt.Sprintf("timer-%d", i)}})
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "shop-1"}}
	decisionFirst{}.Generic(context.Background(), event.GenericEvent{Object: pod}, q)
	deadline := time.Now().Add(5 * time.Second)
	for q.Len() < 4 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	item, prio, _ := q.GetWithPriority()
	if item.Name != "shop-1" || prio != DecisionPriority {
		t.Fatalf("first out: %s at priority %d, want shop-1 at %d", item.Name, prio, DecisionPriority)
	}
}
