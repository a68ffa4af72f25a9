package detection

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// PodDeletions makes the evaluator forget deleted pods (a manager
// Runnable). It subscribes once the manager runs, retrying while the API
// server is unreachable: getting the informer needs the API, and setup must
// not. Deletions before it subscribes are forgotten by the decision
// controller or expire with the score TTL.
type PodDeletions struct {
	Cache     cache.Informers
	Evaluator *Evaluator
	// Retry is how long to wait between attempts; 2s unless a test sets it.
	Retry time.Duration
}

// NeedLeaderElection: every replica keeps its pod informer warm, as when
// setup asked for it, so a new leader starts with a synced cache.
func (p *PodDeletions) NeedLeaderElection() bool { return false }

// Start implements manager.Runnable.
func (p *PodDeletions) Start(ctx context.Context) error {
	retry := p.Retry
	if retry == 0 {
		retry = 2 * time.Second
	}
	log := logf.FromContext(ctx).WithName("pod-deletions")
	var inf cache.Informer
	if err := wait.PollUntilContextCancel(ctx, retry, true, func(ctx context.Context) (bool, error) {
		var err error
		if inf, err = p.Cache.GetInformer(ctx, &corev1.Pod{}); err != nil {
			log.Info("waiting for the pod informer", "error", err.Error())
			return false, nil
		}
		return true, nil
	}); err != nil {
		return nil //nolint:nilerr // stopped before the API answered
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{DeleteFunc: p.deleted}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

func (p *PodDeletions) deleted(obj any) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if pod, ok := obj.(*corev1.Pod); ok {
		p.Evaluator.Forget(PodKey{Namespace: pod.Namespace, Pod: pod.Name}, string(pod.UID))
	}
}
