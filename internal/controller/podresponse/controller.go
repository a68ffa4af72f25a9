// Package podresponse is the per-pod decision: when detection queues a
// trigger for a pod, it gathers the cluster state under a lock, lets
// policy.Decide (pure) say what the policies call for, reserves what that
// takes, and then, unlocked, writes the pod's one Quarantine. The ledger of
// writes the cache does not show yet and the auto-release of a policy's
// Quarantine live here too.
package podresponse

import (
	"context"
	"errors"
	"sync"
	"time"

	toolscache "k8s.io/client-go/tools/cache"

	"golang.org/x/time/rate"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/provenance"
)

// Activity hears what a decision did, for the policies' status (the
// ThreatPolicy controller's Activity).
type Activity interface {
	AddPlan(policy string, plan securityv1alpha1.Plan)
	SetTrigger(policy string, t securityv1alpha1.Trigger)
}

// Reconciler decides, per pod, what the policies whose threshold held call
// for, and writes the one Quarantine of that pod (its spec: the Quarantine
// controller alone writes its status). It also releases a policy's
// Quarantine when autoReleaseAfter is due and the score has fallen.
type Reconciler struct {
	client.Client
	// APIReader settles a create whose outcome is unknown.
	APIReader client.Reader
	// PauseReader reads the pause switch; nil: SetupWithManager starts a
	// cache of that one ConfigMap (a live read per decision cost a request
	// and a round trip ahead of every Quarantine).
	PauseReader client.Reader
	// Triggers queues the evaluations that reached a trigger.
	Triggers *detection.Triggers
	// Evaluator re-scores a pod for auto-release and forgets deleted pods.
	Evaluator *detection.Evaluator
	// Activity hears triggers and plans, for the policies' status.
	Activity         Activity
	Recorder         events.EventRecorder
	ManagerNamespace string
	// MaxActive caps unreleased policy Quarantines cluster-wide; 0: no cap.
	MaxActive int
	// NamespaceShare is the percentage of MaxActive one namespace may
	// hold (0: 50).
	NamespaceShare int
	// Provenance signs the Quarantines this controller creates and tells
	// them from forged ones: only signed ones count against budgets and the
	// cap, or are updated as a policy's own. Required.
	Provenance *provenance.Keyring
	// Now is the clock (tests).
	Now func() time.Time

	// MaxConcurrentReconciles is how many pods are handled in parallel;
	// decisions themselves are serialised by decideMu (budgets), the writes
	// that carry them out are not.
	MaxConcurrentReconciles int

	// Handoff, when set, hears of every Quarantine this controller creates
	// (cmd wires the Quarantine controller's, so isolation need not wait
	// for its watch); nil: nobody.
	Handoff Handoff

	// PlanEvents bounds the Events about plans (WouldQuarantine,
	// CordonCapReached); nil: DefaultPlanEvents in SetupWithManager.
	PlanEvents *rate.Limiter

	// decideMu makes reading the budgets and reserving a slot one step, so
	// two parallel decisions cannot both take the last slot.
	decideMu sync.Mutex
	// pending counts this controller's writes the cache does not show yet.
	pending ledger
	// verified caches the provenance check per Quarantine version.
	verified verified
	// cache is the manager's (SetupWithManager); store, its Quarantine
	// informer's objects, read by decisions without a copy.
	cache   cache.Cache
	storeMu sync.Mutex
	store   toolscache.Store
}

// Handoff hears of this controller's creates: Creating before the request,
// then Created with the API server's answer (after runs the create's Event
// when the Handoff sees fit) or Abandoned when it failed.
type Handoff interface {
	Creating(key types.NamespacedName)
	Created(q *securityv1alpha1.Quarantine, after func())
	Abandoned(key types.NamespacedName)
}

// +kubebuilder:rbac:groups=security.bulkhead.dev,resources=quarantines,verbs=get;list;watch;create;patch;release
// +kubebuilder:rbac:groups="",resources=pods;namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=replicasets,verbs=get
// +kubebuilder:rbac:groups="",namespace=bulkhead-system,resources=configmaps,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile handles one pod: a decision when a new signal asks for one, and
// the auto-release of its Quarantine.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	key := detection.PodKey{Namespace: req.Namespace, Pod: req.Name}
	pod := &corev1.Pod{}
	if err := r.Get(ctx, req.NamespacedName, pod); err != nil {
		if apierrors.IsNotFound(err) {
			r.Evaluator.Forget(key, "")
			// ScaleToZero or Evict may have removed it: its Quarantine's
			// auto-release still runs.
			return r.autoReleaseGone(ctx, req.NamespacedName)
		}
		return ctrl.Result{}, err
	}
	if evals := r.Triggers.Take(key); len(evals) > 0 {
		again, err := r.decide(ctx, pod, evals)
		if err != nil || again > 0 {
			r.Triggers.Retry(key, evals)
			return ctrl.Result{RequeueAfter: again}, err
		}
	}
	w, err := r.observe(ctx, pod, false)
	if err != nil {
		return ctrl.Result{}, err
	}
	return r.autoRelease(ctx, w)
}

// SetupWithManager watches the triggers, and Quarantines (mapped
// to their pod) so auto-release timers survive restarts.
// DefaultPlanEvents allows 10 plan Events a second, 50 at once.
func DefaultPlanEvents() *rate.Limiter { return rate.NewLimiter(10, 50) }

func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Provenance == nil {
		return errors.New("podresponse: Provenance is required")
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.MaxConcurrentReconciles == 0 {
		r.MaxConcurrentReconciles = DefaultMaxConcurrentReconciles
	}
	if r.PlanEvents == nil {
		r.PlanEvents = DefaultPlanEvents()
	}
	r.cache = mgr.GetCache()
	if r.PauseReader == nil {
		c, err := pauseCache(mgr, r.ManagerNamespace)
		if err != nil {
			return err
		}
		r.PauseReader = c
	}
	toPod := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		q, ok := o.(*securityv1alpha1.Quarantine)
		// Verified in the reconcile; the annotation only routes the event.
		if !ok || q.Annotations[securityv1alpha1.CreatedByPolicyAnnotation] == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: q.Namespace, Name: q.Spec.Target.Name}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("podresponse").
		WatchesRawSource(source.Channel(r.Triggers.Pods, decisionFirst{})).
		// Auto-release depends on spec and annotations only, not on the
		// status writes every containment makes several of.
		Watches(&securityv1alpha1.Quarantine{}, toPod, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Complete(r)
}

// DefaultMaxConcurrentReconciles is the default of MaxConcurrentReconciles.
// A decision holds its worker for one create, a round trip that a burst
// makes long (make bench, 200 threats at once: 456 ms p50 under load); with
// 32 workers the 200th decision waited 2.7 s in the queue for one. Workers
// are goroutines; the API server's priority and fairness bounds what runs.
const DefaultMaxConcurrentReconciles = 256

// DecisionPriority is the work queue priority of a pod with new triggers:
// above the Quarantine events (auto-release timers), so a burst of those
// never delays a containment.
const DecisionPriority = 100

// decisionFirst enqueues the pods named on the triggers channel at
// DecisionPriority (plainly when the queue has no priorities).
type decisionFirst struct {
	handler.TypedFuncs[client.Object, reconcile.Request]
}

func (decisionFirst) Generic(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.Object)}
	if pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request]); ok {
		pq.AddWithOpts(priorityqueue.AddOpts{Priority: ptr.To(DecisionPriority)}, req)
		return
	}
	q.Add(req)
}

// pauseCache caches the pause switch ConfigMap alone: the manager may watch
// ConfigMaps only in its namespace, and needs no other one here. Its
// informer is registered when the manager starts (setup must not need the
// API server), so it is synced before the first decision.
func pauseCache(mgr ctrl.Manager, namespace string) (cache.Cache, error) {
	c, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(),
		// Default selectors, not ByObject: ByObject needs the REST mapping
		// at construction, and setup must not need the API server.
		DefaultNamespaces:    map[string]cache.Config{namespace: {}},
		DefaultFieldSelector: fields.OneTermEqualSelector("metadata.name", securityv1alpha1.ControlConfigMap),
	})
	if err != nil {
		return nil, err
	}
	if err := mgr.Add(c); err != nil {
		return nil, err
	}
	// Until the API server answers: a manager started before it waits.
	return c, mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		_ = wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
			_, err := c.GetInformer(ctx, &corev1.ConfigMap{})
			return err == nil, nil
		})
		return nil
	}))
}
