package threatpolicy

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

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
	// Watch VulnerabilityReports only where Trivy Operator serves them.
	var reports client.Reader
	if _, err := mgr.GetRESTMapper().RESTMapping(exposure.VulnerabilityReportGVK.GroupKind(), exposure.VulnerabilityReportGVK.Version); err == nil {
		reports = mgr.GetClient()
	} else if !apimeta.IsNoMatchError(err) {
		return nil, fmt.Errorf("discovering VulnerabilityReports: %w", err)
	}
	assessor, err := exposure.NewAssessor(reports)
	if err != nil {
		return nil, err
	}
	engine := NewEngine(store, mgr.GetClient(), assessor)

	// Scores expire with their pod.
	inf, err := mgr.GetCache().GetInformer(context.Background(), &corev1.Pod{})
	if err != nil {
		return nil, err
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if pod, ok := obj.(*corev1.Pod); ok {
			engine.Forget(detector.PodKey{Namespace: pod.Namespace, Pod: pod.Name}, string(pod.UID))
		}
	}}); err != nil {
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
