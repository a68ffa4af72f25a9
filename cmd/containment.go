package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/controller/quarantine"
	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/evidence"
	"github.com/bulkhead-dev/bulkhead/internal/guardinstall"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/sensorhub"
)

// containmentFlags configure the Quarantine controller.
type containmentFlags struct {
	retention         time.Duration
	minNodes          int
	concurrency       int
	evidenceRetention time.Duration
	evidenceTimeout   time.Duration
	// installGuard: the manager installs the admission guards when the
	// install path did not (OLM).
	installGuard bool
}

func (f *containmentFlags) bind(fs *flag.FlagSet) {
	fs.DurationVar(&f.retention, "released-retention", 720*time.Hour, "How long a Released Quarantine is kept before it is deleted.")
	fs.IntVar(&f.minNodes, "min-schedulable-nodes", 1, "CordonNode never leaves fewer schedulable nodes than this (a Quarantine's spec.safeguards may raise it).")
	fs.DurationVar(&f.evidenceRetention, "evidence-retention", evidence.DefaultRetention, "How long evidence is kept in the manager namespace after its Quarantine is gone.")
	fs.DurationVar(&f.evidenceTimeout, "evidence-gather-timeout", evidence.DefaultGatherTimeout, "Bound on reading a contained pod's Events and logs for its evidence (isolation never waits for it).")
	fs.BoolVar(&f.installGuard, "install-admission-guard", true, "Install the admission guards (config/admission) at start when absent, as OLM bundles cannot carry them; without them hand-made destructive actions are refused (AdmissionGuardMissing).")
	fs.IntVar(&f.concurrency, "containment-concurrency", 128, "Quarantines contained in parallel (make bench, 200 threats on 2 cores: a first pass in a burst is one round trip, the NetworkPolicy and the label at once, so it is the API server's latency that workers wait on; 128 isolated them in 1.9 s p99 where 32 took 6.8 s).")
}

// setupContainment adds the Quarantine controller, which applies and undoes
// containment actions and alone writes Quarantine status, and its janitor.
// onPhaseChange hears every phase change (notifications).
// sensors, when set, reports the node kernels' enforcement of Isolate;
// scores are the detectors' scores the evidence records.
func setupContainment(mgr ctrl.Manager, namespace string, f containmentFlags, sensors *sensorhub.Hub, scores *detection.Store,
	onPhaseChange func(ctx context.Context, q *securityv1alpha1.Quarantine, from, to securityv1alpha1.QuarantinePhase), handoff *quarantine.Handoff) error {
	if f.evidenceRetention <= 0 || f.evidenceTimeout <= 0 {
		return fmt.Errorf("--evidence-retention and --evidence-gather-timeout must be positive")
	}
	kube, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return err
	}
	r := &quarantine.QuarantineReconciler{
		Client:                  mgr.GetClient(),
		ManagerNamespace:        namespace,
		ReleasedRetention:       f.retention,
		MinSchedulableNodes:     f.minNodes,
		MaxConcurrentReconciles: f.concurrency,
		OnPhaseChange:           onPhaseChange,
		Handoff:                 handoff,
		Provenance:              provenanceKeys(mgr, namespace),
		ProtectedBy: func(ctx context.Context, ns string) (string, error) {
			var tps securityv1alpha1.ThreatPolicyList
			if err := mgr.GetClient().List(ctx, &tps); err != nil {
				return "", err
			}
			return policy.ProtectingPolicy(tps.Items, ns), nil
		},
		Evidence: &evidence.Sources{
			Scores: func(ns, pod string) map[string]detector.Entry {
				return scores.Fresh(detection.PodKey{Namespace: ns, Pod: pod})
			},
			Policies: mgr.GetClient(), Events: mgr.GetAPIReader(), Logs: evidence.PodLogs(kube.CoreV1()), Timeout: f.evidenceTimeout,
		},
	}
	if sensors != nil {
		r.Kernel, r.KernelChanges = sensors, sensors.Changes()
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return err
	}
	if f.installGuard {
		err := mgr.Add(&guardinstall.Installer{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Log: ctrl.Log.WithName("guardinstall")})
		if err != nil {
			return err
		}
	}
	if err := mgr.Add(&quarantine.Janitor{Reconciler: r, Interval: 5 * time.Minute}); err != nil {
		return err
	}
	return mgr.Add(&evidence.Janitor{Client: mgr.GetClient(), Secrets: mgr.GetAPIReader(), Quarantines: mgr.GetClient(),
		Namespace: namespace, Retention: f.evidenceRetention, Interval: 10 * time.Minute})
}
