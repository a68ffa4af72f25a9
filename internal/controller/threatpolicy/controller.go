// Package threatpolicy writes ThreatPolicy status, and nothing else: pods
// covered, active Quarantines, and what the running manager saw (Activity:
// signals evaluated by internal/detection, triggers and plans from the
// per-pod decision in internal/controller/podresponse). Nothing here writes
// a ThreatPolicy's spec or any other object.
package threatpolicy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/sensorhub"
)

// resync refreshes podsCovered even when nothing else changes.
const resync = time.Minute

// ThreatPolicyReconciler writes a ThreatPolicy's status: pods covered,
// active Quarantines, last trigger, last signal per detector, plans, and a
// Ready condition that says BudgetExhausted when the budget is spent.
type ThreatPolicyReconciler struct {
	client.Client
	// Activity holds what the status reports beyond the API's objects.
	Activity *Activity
	// Detectors knows the detector names that exist (detection.Registry).
	Detectors interface{ Known(name string) bool }
	// Evaluations drops a deleted policy's evaluations (detection.Evaluator).
	Evaluations interface{ ForgetPolicy(name string) }
	Recorder    events.EventRecorder
	// Coverage reports the node sensors' heartbeats (sensorhub.Hub); nil
	// when the manager runs without them.
	Coverage interface {
		Uncovered(silence time.Duration) []sensorhub.NodeState
		Nodes() []sensorhub.NodeState
	}
}

// +kubebuilder:rbac:groups=security.bulkhead.dev,resources=threatpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=security.bulkhead.dev,resources=threatpolicies/status,verbs=get;update;patch

// Reconcile fetches the policy, builds its status in small ordered steps
// and applies it once, deferred, whatever happened.
func (r *ThreatPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	p := &securityv1alpha1.ThreatPolicy{}
	if err := r.Get(ctx, req.NamespacedName, p); err != nil {
		if apierrors.IsNotFound(err) {
			r.Activity.Forget(req.Name)
			r.Evaluations.ForgetPolicy(req.Name)
			metrics.PolicyBudgetExhausted.DeleteLabelValues(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	snap := r.Activity.TakeSnapshot(p.Name)
	st := p.Status.DeepCopy()
	defer func() {
		var s *stalled
		switch {
		case errors.As(retErr, &s):
			setCondition(st, p, securityv1alpha1.ConditionReady, metav1.ConditionFalse, securityv1alpha1.ReasonInvalidSpec, s.Error())
			setCondition(st, p, securityv1alpha1.ConditionStalled, metav1.ConditionTrue, securityv1alpha1.ReasonInvalidSpec, s.Error())
			st.ObservedGeneration = p.Generation
			retErr = reconcile.TerminalError(s)
		case retErr == nil:
			// observedGeneration says the whole spec was acted on.
			st.ObservedGeneration = p.Generation
		}
		if !equality.Semantic.DeepEqual(&p.Status, st) {
			if err := r.applyStatus(ctx, p, st); err != nil {
				retErr = kerrors.NewAggregate([]error{retErr, err})
			}
		}
		if retErr != nil {
			r.Activity.Restore(p.Name, snap.Plans)
		}
	}()
	for _, step := range []func(context.Context, *securityv1alpha1.ThreatPolicy, *securityv1alpha1.ThreatPolicyStatus, Snapshot) error{
		r.reconcileCoverage, r.reconcileActive, r.reconcileSignals, r.reconcileBehaviorCoverage, r.reconcileReady,
	} {
		if err := step(ctx, p, st, snap); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{RequeueAfter: kubeutil.Jitter(resync)}, nil
}

// stalled is a spec problem retrying cannot fix.
type stalled struct{ err error }

func (s *stalled) Error() string { return s.err.Error() }

// reconcileCoverage counts the pods the selector matches.
func (r *ThreatPolicyReconciler) reconcileCoverage(ctx context.Context, p *securityv1alpha1.ThreatPolicy, st *securityv1alpha1.ThreatPolicyStatus, _ Snapshot) error {
	// Read-only views of the cache: a deep copy of every pod per status
	// write was most of this controller's CPU under load.
	var nss corev1.NamespaceList
	if err := r.List(ctx, &nss, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	opts := []client.ListOption{client.UnsafeDisableDeepCopy}
	if s := p.Spec.Selector.PodSelector; s != nil {
		sel, err := metav1.LabelSelectorAsSelector(s)
		if err != nil {
			return &stalled{fmt.Errorf("podSelector: %w", err)}
		}
		opts = append(opts, client.MatchingLabelsSelector{Selector: sel})
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, opts...); err != nil {
		return err
	}
	byName := make(map[string]*corev1.Namespace, len(nss.Items))
	for i := range nss.Items {
		byName[nss.Items[i].Name] = &nss.Items[i]
	}
	n := int32(0)
	for i := range pods.Items {
		ns, ok := byName[pods.Items[i].Namespace]
		if !ok {
			continue
		}
		ok, err := policy.Selects(p, ns, &pods.Items[i])
		if err != nil {
			return &stalled{err}
		}
		if ok {
			n++
		}
	}
	st.PodsCovered = n
	return nil
}

// reconcileActive counts unreleased Quarantines this policy contributes to.
func (r *ThreatPolicyReconciler) reconcileActive(ctx context.Context, p *securityv1alpha1.ThreatPolicy, st *securityv1alpha1.ThreatPolicyStatus, _ Snapshot) error {
	var qs securityv1alpha1.QuarantineList
	if err := r.List(ctx, &qs, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	n := int32(0)
	for i := range qs.Items {
		q := &qs.Items[i]
		if !q.IsReleased() && q.Spec.Reason != nil && q.Annotations[securityv1alpha1.CreatedByPolicyAnnotation] != "" && slices.Contains(q.Spec.Reason.Policies, p.Name) {
			n++
		}
	}
	st.ActiveQuarantines = n
	return nil
}

// reconcileSignals reports the last trigger, last signal per detector and plans.
func (r *ThreatPolicyReconciler) reconcileSignals(_ context.Context, p *securityv1alpha1.ThreatPolicy, st *securityv1alpha1.ThreatPolicyStatus, snap Snapshot) error {
	if snap.LastTrigger != nil && (st.LastTrigger == nil || snap.LastTrigger.Time.After(st.LastTrigger.Time.Time)) {
		st.LastTrigger = snap.LastTrigger.DeepCopy()
	}
	dets := make([]securityv1alpha1.DetectorStatus, 0, len(p.Spec.Detectors))
	for _, d := range p.Spec.Detectors {
		ds := securityv1alpha1.DetectorStatus{Name: d.Name}
		if i := slices.IndexFunc(st.Detectors, func(x securityv1alpha1.DetectorStatus) bool { return x.Name == d.Name }); i >= 0 {
			ds.LastSignalTime = st.Detectors[i].LastSignalTime
		}
		if t, ok := snap.LastSignal[d.Name]; ok && (ds.LastSignalTime == nil || t.Truncate(time.Second).After(ds.LastSignalTime.Time)) {
			ds.LastSignalTime = &metav1.Time{Time: t.Truncate(time.Second)}
		}
		dets = append(dets, ds)
	}
	st.Detectors = dets
	for _, plan := range snap.Plans {
		st.Plans = addPlan(st.Plans, plan)
	}
	if len(st.Plans) > maxPlans {
		st.Plans = st.Plans[len(st.Plans)-maxPlans:]
	}
	return nil
}

// reconcileReady sets Ready, False with BudgetExhausted when no budget is left.
func (r *ThreatPolicyReconciler) reconcileReady(_ context.Context, p *securityv1alpha1.ThreatPolicy, st *securityv1alpha1.ThreatPolicyStatus, _ Snapshot) error {
	budget := policy.Budget(p)
	apimeta.RemoveStatusCondition(&st.Conditions, securityv1alpha1.ConditionStalled)
	if int(st.ActiveQuarantines) >= budget {
		was := apimeta.IsStatusConditionPresentAndEqual(st.Conditions, securityv1alpha1.ConditionReady, metav1.ConditionFalse) &&
			apimeta.FindStatusCondition(st.Conditions, securityv1alpha1.ConditionReady).Reason == securityv1alpha1.ReasonBudgetExhausted
		msg := fmt.Sprintf("%d active Quarantines reach maxActiveQuarantines %d: new containments are planned, not carried out", st.ActiveQuarantines, budget)
		setCondition(st, p, securityv1alpha1.ConditionReady, metav1.ConditionFalse, securityv1alpha1.ReasonBudgetExhausted, msg)
		metrics.PolicyBudgetExhausted.WithLabelValues(p.Name).Set(1)
		if !was {
			r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, securityv1alpha1.ReasonBudgetExhausted, "Evaluate", "%s", msg)
		}
		return nil
	}
	metrics.PolicyBudgetExhausted.WithLabelValues(p.Name).Set(0)
	msg := fmt.Sprintf("%s: covering %d pods, %d of %d Quarantines in use", p.Spec.Mode, st.PodsCovered, st.ActiveQuarantines, budget)
	// A misspelt detector name would silently never score.
	var unknown []string
	for _, d := range p.Spec.Detectors {
		if !r.Detectors.Known(d.Name) {
			unknown = append(unknown, d.Name)
		}
	}
	if len(unknown) > 0 {
		msg += fmt.Sprintf("; no detector named %v has posted since the manager started", unknown)
	}
	setCondition(st, p, securityv1alpha1.ConditionReady, metav1.ConditionTrue, securityv1alpha1.ReasonSucceeded, msg)
	return nil
}

func setCondition(st *securityv1alpha1.ThreatPolicyStatus, p *securityv1alpha1.ThreatPolicy, t string, s metav1.ConditionStatus, reason, msg string) {
	apimeta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: p.Generation})
}

// applyStatus server-side applies the status subresource.
func (r *ThreatPolicyReconciler) applyStatus(ctx context.Context, p *securityv1alpha1.ThreatPolicy, st *securityv1alpha1.ThreatPolicyStatus) error {
	u, err := kubeutil.FromMap(map[string]any{
		"apiVersion": securityv1alpha1.GroupVersion.String(), "kind": "ThreatPolicy",
		"metadata": map[string]any{"name": p.Name, "uid": string(p.UID)},
		"status":   st,
	})
	if err != nil {
		return err
	}
	if err := kubeutil.ApplyStatus(ctx, r.Client, u); err != nil {
		return fmt.Errorf("applying ThreatPolicy %s status: %w", p.Name, err)
	}
	return nil
}

// SetupWithManager watches policies (spec changes or a reconcile-request
// annotation), the Activity's requests, and Quarantines by contributor.
func (r *ThreatPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	toPolicies := func(_ context.Context, o client.Object) []reconcile.Request {
		q, ok := o.(*securityv1alpha1.Quarantine)
		if !ok || q.Spec.Reason == nil {
			return nil
		}
		var out []reconcile.Request
		for _, p := range q.Spec.Reason.Policies {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: p}})
		}
		return out
	}
	self := func(_ context.Context, o client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: o.GetName()}}}
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&securityv1alpha1.ThreatPolicy{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		WatchesRawSource(source.Channel(r.Activity.Policies, coalesced(statusCoalesce, self))).
		Watches(&securityv1alpha1.Quarantine{}, coalesced(statusCoalesce, toPolicies)).
		Named("threatpolicy").
		Complete(r)
}

// statusCoalesce is how long signals and Quarantine changes wait before
// they refresh a policy's status: a burst of containments then writes
// each policy's status about once per interval, not once per change. Spec
// changes are not delayed.
const statusCoalesce = time.Second

// coalesced enqueues what m maps an object to after d; the delaying queue
// keeps one entry per policy, so events within d share one reconcile.
func coalesced(d time.Duration, m handler.MapFunc) handler.EventHandler {
	add := func(ctx context.Context, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		if o == nil {
			return
		}
		for _, req := range m(ctx, o) {
			q.AddAfter(req, d)
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.Object, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.ObjectOld, q)
			add(ctx, e.ObjectNew, q)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.Object, q)
		},
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.Object, q)
		},
	}
}
