package detection

import (
	"context"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Triggers is the queue between evaluation and decision: per pod, the
// evaluations that reached their policy's trigger. The decision takes them,
// so only new signals can contain, and a lower score arriving before the
// decision does not erase the trigger.
type Triggers struct {
	// Pods names each pod with new triggers once (a source.Channel for the
	// decision controller).
	Pods chan event.GenericEvent

	mu      sync.Mutex
	pending map[PodKey]map[string]policy.Evaluation
}

// NewTriggers returns an empty queue.
func NewTriggers() *Triggers {
	return &Triggers{Pods: make(chan event.GenericEvent, 1024), pending: map[PodKey]map[string]policy.Evaluation{}}
}

// put records a triggered evaluation of one policy; it does not wake the
// decision (Notify does, once per signal).
func (t *Triggers) put(key PodKey, ev policy.Evaluation) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending[key] == nil {
		t.pending[key] = map[string]policy.Evaluation{}
	}
	t.pending[key][ev.Policy.Name] = ev
}

// notify asks for a decision about the pod; it waits while the queue is full.
func (t *Triggers) notify(ctx context.Context, key PodKey) {
	select {
	case t.Pods <- event.GenericEvent{Object: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Pod}}}:
	case <-ctx.Done():
	}
}

// Take returns and clears the pod's triggered evaluations, by policy.
func (t *Triggers) Take(key PodKey) map[string]policy.Evaluation {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := t.pending[key]
	delete(t.pending, key)
	return out
}

// Retry puts back evaluations whose decision failed, unless newer ones came.
func (t *Triggers) Retry(key PodKey, evals map[string]policy.Evaluation) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending[key] == nil {
		t.pending[key] = map[string]policy.Evaluation{}
	}
	for n, ev := range evals {
		if _, newer := t.pending[key][n]; !newer {
			t.pending[key][n] = ev
		}
	}
}

func (t *Triggers) forget(key PodKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.pending, key)
}

func (t *Triggers) forgetPolicy(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, byPolicy := range t.pending {
		delete(byPolicy, name)
	}
}
