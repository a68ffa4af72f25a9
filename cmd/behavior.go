package main

import (
	"context"
	"flag"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/bulkhead-dev/bulkhead/internal/behavior"
	"github.com/bulkhead-dev/bulkhead/internal/behavior/kubestore"
)

// behaviorFlags configure the built-in behavior model.
type behaviorFlags struct {
	enabled      bool
	cfg          behavior.Config
	saveInterval time.Duration
}

func (f *behaviorFlags) bind(fs *flag.FlagSet) {
	fs.BoolVar(&f.enabled, "behavior-enabled", true, "Run the built-in behavior model.")
	fs.DurationVar(&f.cfg.LearningWindow, "behavior-learning-window", 24*time.Hour, "How long a new workload revision learns its baseline before it is scored against it.")
	fs.IntVar(&f.cfg.SeqN, "behavior-ngram", 8, "Longest system-call n-gram the model learns.")
	fs.IntVar(&f.cfg.SetCap, "behavior-max-items", 2048, "Most binaries, exec edges, argument shapes and destinations learned per workload, each.")
	fs.DurationVar(&f.saveInterval, "behavior-save-interval", time.Minute, "How often changed baselines are saved to ConfigMaps in the manager namespace.")
}

// setupBehavior builds the behavior model the detection pipeline feeds,
// with its baseline saver; nil when the model is disabled.
func setupBehavior(mgr ctrl.Manager, namespace string, f behaviorFlags) (*behavior.Observer, error) {
	if !f.enabled {
		return nil, nil
	}
	store := &kubestore.Store{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Namespace: namespace}
	obs := behavior.NewObserver(f.cfg, kubestore.Resolver{Reader: mgr.GetClient()}, store)
	log := ctrl.Log.WithName("behavior")
	// Save periodically and once more on shutdown. Only the leader ingests
	// (ingest.Server needs the lease), so only its observer learns; the
	// saver does not wait for the lease, and on a follower, whose observer
	// has seen nothing, it has nothing to save.
	return obs, mgr.Add(everyReplica(func(ctx context.Context) error {
		t := time.NewTicker(f.saveInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				final, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := obs.Flush(final); err != nil {
					log.Error(err, "saving baselines on shutdown")
				}
				return nil
			case <-t.C:
				if err := obs.Flush(ctx); err != nil {
					log.Error(err, "saving baselines")
				}
			}
		}
	}))
}

// everyReplica is a runnable that does not wait for leader election.
type everyReplica func(ctx context.Context) error

func (f everyReplica) Start(ctx context.Context) error { return f(ctx) }

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (everyReplica) NeedLeaderElection() bool { return false }

var _ manager.LeaderElectionRunnable = everyReplica(nil)
