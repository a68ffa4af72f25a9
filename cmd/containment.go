package main

import (
	"context"
	"flag"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/controller/quarantine"
)

// Containment: the Quarantine controller and its janitor.
func init() {
	var (
		retention   time.Duration
		minNodes    int
		concurrency int
	)
	register(component{
		name: "containment",
		flags: func(fs *flag.FlagSet) {
			fs.DurationVar(&retention, "released-retention", 720*time.Hour, "How long a Released Quarantine is kept before it is deleted.")
			fs.IntVar(&minNodes, "min-schedulable-nodes", 1, "CordonNode never leaves fewer schedulable nodes than this (hand-made Quarantines).")
			fs.IntVar(&concurrency, "containment-concurrency", 16, "Quarantines contained in parallel (make bench: 16 contains as fast as 32 on 2 cores, twice as fast as 8).")
		},
		setup: func(mgr ctrl.Manager, opts *Options) error {
			r := &quarantine.QuarantineReconciler{
				Client:                  mgr.GetClient(),
				ManagerNamespace:        opts.ManagerNamespace,
				ReleasedRetention:       retention,
				MinSchedulableNodes:     minNodes,
				MaxConcurrentReconciles: concurrency,
				// notifier is set by notify.go's setup, which runs after this
				// one, so read it when a phase changes, not now.
				OnPhaseChange: func(ctx context.Context, q *securityv1alpha1.Quarantine, from, to securityv1alpha1.QuarantinePhase) {
					notifier.OnPhaseChange(ctx, q, from, to)
				},
			}
			if err := r.SetupWithManager(mgr); err != nil {
				return err
			}
			return mgr.Add(&quarantine.Janitor{Reconciler: r, Interval: 5 * time.Minute})
		},
	})
}
