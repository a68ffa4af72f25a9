package containment

import (
	"context"
	"errors"
	"fmt"
	"time"

	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// ErrEvictionBlocked means a PodDisruptionBudget refused the eviction; the
// caller retries with backoff, never forcing a delete.
var ErrEvictionBlocked = errors.New("eviction blocked by a PodDisruptionBudget")

const evictionTimeout = 15 * time.Second

// evict evicts the target pod through the Eviction API, so
// PodDisruptionBudgets are honoured; its owner recreates it.
type evict struct{ podAction }

func (evict) Traits() Traits { return Traits{Destructive: true, NeedsPersistedEvidence: true} }

func (evict) Apply(ctx context.Context, e *Engine, s *Scope, _ securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	pod := podOf(s)
	if pod == nil || pod.DeletionTimestamp != nil {
		// Gone or going: evicted by us earlier, or by someone else.
		st.State = securityv1alpha1.ActionApplied
		return Outcome{}, nil
	}
	st.Resource, st.ResourceAPIVersion = "Pod/"+pod.Name, "v1"
	ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace}}
	// The API server holds an eviction while a budget's status is not yet
	// observed; a worker must not hang on it.
	ectx, cancel := context.WithTimeout(ctx, evictionTimeout)
	defer cancel()
	err := e.Client.SubResource("eviction").Create(ectx, pod, ev)
	switch {
	case err == nil || apierrors.IsNotFound(err):
		st.State, st.Message = securityv1alpha1.ActionApplied, ""
		return Outcome{Changed: err == nil}, nil
	case apierrors.IsTooManyRequests(err):
		st.Attempts++
		st.State, st.Message = securityv1alpha1.ActionPending, fmt.Sprintf("attempt %d: %v", st.Attempts, err)
		return Outcome{}, fmt.Errorf("%w: %v", ErrEvictionBlocked, err)
	default:
		return Outcome{}, err
	}
}

// Revert cannot bring the pod back; the owner has recreated it.
func (evict) Revert(_ context.Context, _ *Engine, _ *Scope, _ securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	st.State, st.Message = securityv1alpha1.ActionNotReverted, "an eviction cannot be undone; the owner recreates the pod"
	return Outcome{}, nil
}
