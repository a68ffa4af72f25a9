package threatpolicy

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/exposure"
)

// Options configure policy evaluation.
type Options struct {
	ManagerNamespace string
	// ScoreTTL is how long a score stays fresh (--score-ttl).
	ScoreTTL time.Duration
	// MaxPods bounds the score store.
	MaxPods int
	// MaxActiveQuarantines caps policy Quarantines cluster-wide; 0: no cap.
	MaxActiveQuarantines int
}

// +kubebuilder:rbac:groups=aquasecurity.github.io,resources=vulnerabilityreports,verbs=get;list;watch

// Setup adds the score store, the engine and both controllers to mgr and
// returns the engine, the detector.Sink ingestion records into.
func Setup(mgr ctrl.Manager, o Options) (*Engine, error) {
	store := detector.NewStore(o.ScoreTTL, o.MaxPods)
	if err := mgr.Add(store); err != nil {
		return nil, err
	}
	// Watch VulnerabilityReports only where Trivy Operator serves them, found
	// out on first use: setup must not need the API server.
	assessor, err := exposure.NewAssessor(&exposure.LazyReports{Mapper: mgr.GetRESTMapper(), Reader: mgr.GetClient()})
	if err != nil {
		return nil, err
	}
	engine := NewEngine(store, mgr.GetClient(), assessor)

	// Scores expire with their pod.
	if err := mgr.Add(&podDeletions{cache: mgr.GetCache(), engine: engine}); err != nil {
		return nil, err
	}

	recorder := mgr.GetEventRecorder("bulkhead")
	if err := (&ContainmentReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Engine: engine, Recorder: recorder,
		ManagerNamespace: o.ManagerNamespace, MaxActive: o.MaxActiveQuarantines,
	}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := (&ThreatPolicyReconciler{Client: mgr.GetClient(), Engine: engine, Recorder: recorder}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	return engine, nil
}

var _ detector.Sink = (*Engine)(nil)

// podDeletions makes the engine forget deleted pods. It subscribes once the
// manager runs, retrying while the API server is unreachable: getting the
// informer needs the API, and setup must not. Deletions before it subscribes
// are forgotten by the containment controller or expire with the score TTL.
type podDeletions struct {
	cache  cache.Informers
	engine *Engine
	// retry is how long to wait between attempts; 2s unless a test sets it.
	retry time.Duration
}

// NeedLeaderElection: every replica keeps its pod informer warm, as when
// setup asked for it, so a new leader starts with a synced cache.
func (p *podDeletions) NeedLeaderElection() bool { return false }

// Start implements manager.Runnable.
func (p *podDeletions) Start(ctx context.Context) error {
	retry := p.retry
	if retry == 0 {
		retry = 2 * time.Second
	}
	log := logf.FromContext(ctx).WithName("pod-deletions")
	var inf cache.Informer
	if err := wait.PollUntilContextCancel(ctx, retry, true, func(ctx context.Context) (bool, error) {
		var err error
		if inf, err = p.cache.GetInformer(ctx, &corev1.Pod{}); err != nil {
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

func (p *podDeletions) deleted(obj any) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if pod, ok := obj.(*corev1.Pod); ok {
		p.engine.Forget(detector.PodKey{Namespace: pod.Namespace, Pod: pod.Name}, string(pod.UID))
	}
}
