package quarantine

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
)

// Janitor removes cluster-scoped leftovers at start and periodically, and
// keeps the active-quarantines gauge exact (a restart resets gauges).
type Janitor struct {
	Reconciler *QuarantineReconciler
	// Interval between runs, jittered.
	Interval time.Duration
}

// NeedLeaderElection: only the leader changes the cluster.
func (j *Janitor) NeedLeaderElection() bool { return true }

// Start runs until ctx ends.
func (j *Janitor) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("containment-janitor")
	wait.JitterUntilWithContext(ctx, func(ctx context.Context) {
		if err := j.RunOnce(ctx); err != nil {
			log.Error(err, "cleaning leftovers")
		}
	}, j.Interval, 0.2, true)
	return nil
}

// RunOnce cleans leftovers and recounts active Quarantines.
func (j *Janitor) RunOnce(ctx context.Context) error {
	r := j.Reconciler
	list := &securityv1alpha1.QuarantineList{}
	if err := r.APIReader.List(ctx, list); err != nil {
		return err
	}
	metrics.ActiveQuarantines.Reset()
	for _, q := range list.Items {
		if q.Status.Phase != securityv1alpha1.PhaseReleased {
			metrics.ActiveQuarantines.WithLabelValues(q.Namespace, string(q.Status.Phase)).Inc()
		}
	}
	live := func(ctx context.Context, ns, name string) (bool, error) {
		q := &securityv1alpha1.Quarantine{}
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, q); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return q.Status.Phase != securityv1alpha1.PhaseReleased, nil
	}
	_, err := r.engine().RemoveLeftovers(ctx, live)
	return err
}
