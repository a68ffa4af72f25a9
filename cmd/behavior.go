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

// Behavior: the built-in behavior model, fed by signal ingestion. Sorts before
// detection.go so opts.Behavior is set when ingestion is set up.
func init() {
	var (
		enabled      bool
		cfg          behavior.Config
		saveInterval time.Duration
	)
	register(component{
		name: "behavior",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&enabled, "behavior-enabled", true, "Run the built-in behavior model.")
			fs.DurationVar(&cfg.LearningWindow, "behavior-learning-window", 24*time.Hour, "How long a new workload revision learns its baseline before it is scored against it.")
			fs.IntVar(&cfg.SeqN, "behavior-ngram", 8, "Longest system-call n-gram the model learns.")
			fs.IntVar(&cfg.SetCap, "behavior-max-items", 2048, "Most binaries, exec edges, argument shapes and destinations learned per workload, each.")
			fs.DurationVar(&saveInterval, "behavior-save-interval", time.Minute, "How often changed baselines are saved to ConfigMaps in the manager namespace.")
		},
		setup: func(mgr ctrl.Manager, opts *Options) error {
			if !enabled {
				return nil
			}
			store := &kubestore.Store{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Namespace: opts.ManagerNamespace}
			obs := behavior.NewObserver(cfg, kubestore.Resolver{Reader: mgr.GetClient()}, store)
			opts.Behavior = obs
			log := ctrl.Log.WithName("behavior")
			// Save periodically and once more on shutdown; runs on every
			// replica, since each observes the events it ingests.
			return mgr.Add(everyReplica(func(ctx context.Context) error {
				t := time.NewTicker(saveInterval)
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
		},
	})
}

// everyReplica is a runnable that does not wait for leader election.
type everyReplica func(ctx context.Context) error

func (f everyReplica) Start(ctx context.Context) error { return f(ctx) }

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (everyReplica) NeedLeaderElection() bool { return false }

var _ manager.LeaderElectionRunnable = everyReplica(nil)
