// Package quarantine reconciles Quarantines: it applies containment actions
// and undoes them on release. The actions live in internal/containment (one
// file each, dispatched through its registry), the evidence in
// internal/evidence, and the lifecycle rules (phase, earlier holder,
// needs-revert) in lifecycle.go as pure functions; the rest of this package
// is plumbing: fetch, finalizer, ordered steps, one status patch.
package quarantine

import (
	"context"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
	"github.com/bulkhead-dev/bulkhead/internal/evidence"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
	"github.com/bulkhead-dev/bulkhead/internal/provenance"
)

// QuarantineReconciler contains targets and releases them.
type QuarantineReconciler struct {
	// Client writes Quarantines and everything containment changes.
	client.Client
	// APIReader reads fresh state for containment decisions.
	APIReader client.Reader
	// Recorder emits Events on the Quarantine and the pod.
	Recorder events.EventRecorder
	// ManagerNamespace is always protected.
	ManagerNamespace string
	// ReleasedRetention is how long a Released Quarantine is kept.
	ReleasedRetention time.Duration
	// MinSchedulableNodes is the CordonNode floor for hand-made Quarantines.
	MinSchedulableNodes int
	// Recheck is how often a Contained Quarantine is re-verified (tampering
	// the watches miss, new policies reopening the pod); jittered.
	Recheck time.Duration
	// MaxConcurrentReconciles bounds parallel containment.
	MaxConcurrentReconciles int
	// OnPhaseChange, when set, is called after a status patch that changed
	// the phase (notifications hook in here).
	OnPhaseChange func(ctx context.Context, q *securityv1alpha1.Quarantine, from, to securityv1alpha1.QuarantinePhase)
	// Now is the clock; tests may pin it.
	Now func() time.Time
	// Kernel reports what node sensors enforce in their kernels; nil when
	// no sensor runs. KernelChanges, when set, wakes the Quarantine whose
	// kernel state a sensor just changed.
	Kernel        KernelReports
	KernelChanges <-chan event.GenericEvent
	// Provenance tells the manager's own Quarantines from hand-made ones
	// (internal/provenance); nil: every Quarantine counts as hand-made.
	Provenance *provenance.Keyring

	// Handoff, when set, brings the Quarantines the policies create ahead
	// of the watch (handoff.go); nil: the watch alone.
	Handoff *Handoff

	// served is shared by every pass's Engine (set up in SetupWithManager).
	served *containment.ServedKinds
	// waiting are the Quarantines created and not reconciled yet; nil (no
	// SetupWithManager): nothing waits for them.
	waiting *unisolated
	// written keeps this controller's own latest writes for a cache that
	// lags them (handoff.go); nil: the cache alone.
	written *written
	// stash keeps evidence snapshots a burst deferred (evidence.go).
	stash *evidenceStash
	// cachedHolders lists Quarantines from the cache (sameTarget); nil:
	// live only.
	cachedHolders client.Reader
	// podCache reads target pods from the cache for the isolating writes
	// (isolateEarly); nil: they wait for the live reads.
	podCache client.Reader
	// ProtectedBy names a ThreatPolicy whose protectedNamespaces lists the
	// namespace, or ""; hand-made Quarantines there are refused. nil: none.
	ProtectedBy func(ctx context.Context, namespace string) (string, error)
	// Evidence gathers what the pod object does not show (detector scores,
	// Events, logs); nil: the pod object alone.
	Evidence *evidence.Sources
}

// KernelReports answers what the node sensor enforces for a pod held by a
// Quarantine (internal/sensorhub implements it).
type KernelReports interface {
	KernelEnforcement(namespace, pod, quarantine string) (securityv1alpha1.KernelEnforcement, bool)
}

// +kubebuilder:rbac:groups=security.bulkhead.dev,resources=quarantines,verbs=get;list;watch;patch;delete
// +kubebuilder:rbac:groups=security.bulkhead.dev,resources=quarantines/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=security.bulkhead.dev,resources=quarantines/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch;delete
// +kubebuilder:rbac:groups="",resources=pods/eviction,verbs=create
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets;replicasets,verbs=get;patch
// +kubebuilder:rbac:groups=apps,resources=daemonsets,verbs=get
// +kubebuilder:rbac:groups=apps,resources=deployments/scale;statefulsets/scale;replicasets/scale,verbs=get;update
// +kubebuilder:rbac:groups=batch,resources=jobs;cronjobs,verbs=get;patch
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=list
// +kubebuilder:rbac:groups=policy.networking.k8s.io,resources=adminnetworkpolicies;clusternetworkpolicies,verbs=get;list;create;patch;delete
// +kubebuilder:rbac:groups=cilium.io,resources=ciliumnetworkpolicies,verbs=get;create;patch;delete
// +kubebuilder:rbac:groups=crd.projectcalico.org,resources=globalnetworkpolicies,verbs=get;list;create;patch;delete

// Reconcile fetches the Quarantine, keeps the finalizer, runs the contain or
// release steps and patches status once.
func (r *QuarantineReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	if r.waiting != nil {
		// Its first pass has run (or it is gone): others need not wait for it.
		defer r.waiting.done(req.NamespacedName)
	}
	q := &securityv1alpha1.Quarantine{}
	err := r.Get(ctx, req.NamespacedName, q)
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	if own := r.written.latest(req.NamespacedName, q, err == nil); own != nil {
		q = own // the cache has not caught up with this controller's write
	} else if err != nil {
		return ctrl.Result{}, nil
	}
	if q.Status.Phase == securityv1alpha1.PhaseReleased && !controllerutil.ContainsFinalizer(q, securityv1alpha1.QuarantineFinalizer) {
		return r.reconcileRetention(ctx, q)
	}
	releasing := q.IsReleased() || !q.DeletionTimestamp.IsZero()
	if !releasing && !controllerutil.ContainsFinalizer(q, securityv1alpha1.QuarantineFinalizer) {
		// The finalizer first, alone: nothing may be changed that a delete
		// could leave behind. Once it is persisted the pass goes on (q now
		// carries the new resourceVersion) instead of waiting for the watch.
		base := q.DeepCopy()
		controllerutil.AddFinalizer(q, securityv1alpha1.QuarantineFinalizer)
		if err := r.Patch(ctx, q, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}), kubeutil.FieldOwner); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		r.written.record(req.NamespacedName, base.ResourceVersion, q.DeepCopy())
	}

	p := r.newPass(q)
	defer func() {
		if p.noStatus {
			return
		}
		if err := r.patchStatus(ctx, p); err != nil {
			if retErr == nil {
				retErr = err
			}
		} else {
			p.appliedEvents()
		}
		if retErr == nil && p.dropFinalizer {
			retErr = r.dropFinalizer(ctx, q)
		}
	}()
	if releasing {
		return p.run(ctx, r.releaseSteps())
	}
	return p.run(ctx, r.containSteps())
}

func (r *QuarantineReconciler) dropFinalizer(ctx context.Context, q *securityv1alpha1.Quarantine) error {
	if !controllerutil.ContainsFinalizer(q, securityv1alpha1.QuarantineFinalizer) {
		return nil
	}
	base := q.DeepCopy()
	controllerutil.RemoveFinalizer(q, securityv1alpha1.QuarantineFinalizer)
	err := client.IgnoreNotFound(r.Patch(ctx, q, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}), kubeutil.FieldOwner))
	if err == nil {
		// It may be gone now: no copy of it stands in for the cache.
		r.written.forget(client.ObjectKeyFromObject(q))
	}
	return err
}

// patchStatus writes status when it changed, then reports a phase change.
func (r *QuarantineReconciler) patchStatus(ctx context.Context, p *pass) error {
	q := p.q
	if equality.Semantic.DeepEqual(p.base.Status, q.Status) {
		return nil
	}
	// Locked: a pass that started from a stale cache read must not replace
	// newer status lists (actions, audit) wholesale; it retries instead.
	if err := r.Status().Patch(ctx, q, client.MergeFromWithOptions(p.base, client.MergeFromWithOptimisticLock{}), kubeutil.FieldOwner); err != nil {
		if apierrors.IsNotFound(err) {
			r.written.forget(client.ObjectKeyFromObject(q))
			return nil
		}
		return err
	}
	r.written.record(client.ObjectKeyFromObject(q), p.base.ResourceVersion, q.DeepCopy())
	from, to := p.base.Status.Phase, q.Status.Phase
	if from != to {
		recordPhase(q, from, to, r.now())
		if r.OnPhaseChange != nil {
			r.OnPhaseChange(ctx, q, from, to)
		}
	}
	return nil
}

func (r *QuarantineReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// reconcileRetention deletes a Released Quarantine once its retention ends.
func (r *QuarantineReconciler) reconcileRetention(ctx context.Context, q *securityv1alpha1.Quarantine) (ctrl.Result, error) {
	if r.ReleasedRetention <= 0 || !q.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	since := q.CreationTimestamp.Time
	if q.Status.ReleasedAt != nil {
		since = q.Status.ReleasedAt.Time
	}
	if left := since.Add(r.ReleasedRetention).Sub(r.now()); left > 0 {
		return ctrl.Result{RequeueAfter: left}, nil
	}
	return ctrl.Result{}, client.IgnoreNotFound(r.Delete(ctx, q, client.Preconditions{UID: &q.UID}))
}

// SetupWithManager registers the controller: Quarantines on spec, deletion,
// finalizer or a reconcile-request annotation; owned NetworkPolicies and
// labelled pods so tampering is repaired at once.
func (r *QuarantineReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder("bulkhead-containment")
	}
	if r.Recheck == 0 {
		r.Recheck = 5 * time.Minute
	}
	if r.MaxConcurrentReconciles == 0 {
		r.MaxConcurrentReconciles = 8
	}
	r.served = &containment.ServedKinds{TTL: servedTTL}
	r.waiting, r.written = &unisolated{}, &written{}
	if r.Handoff != nil {
		r.waiting, r.written = r.Handoff.waiting, r.Handoff.written
	}
	r.stash = &evidenceStash{}
	r.cachedHolders, r.podCache = mgr.GetClient(), mgr.GetClient()
	b := ctrl.NewControllerManagedBy(mgr).
		For(&securityv1alpha1.Quarantine{}, builder.WithPredicates(r.waiting.noteCreated(), quarantineChanged)).
		Owns(&networkingv1.NetworkPolicy{}, builder.WithPredicates(notCreated)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.podToQuarantines), builder.WithPredicates(quarantineLabelChanged)).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Named("quarantine")
	if r.KernelChanges != nil {
		b = b.WatchesRawSource(source.Channel(r.KernelChanges, &handler.EnqueueRequestForObject{}))
	}
	if r.Handoff != nil {
		b = b.WatchesRawSource(source.Channel(r.Handoff.ch, &handler.EnqueueRequestForObject{}))
	}
	c, err := b.Build(r)
	if err != nil {
		return err
	}
	return mgr.Add(&denyWatches{mgr: mgr, c: c})
}

// servedTTL is how long the third-party deny kinds served are remembered.
const servedTTL = 30 * time.Second

// quarantineChanged passes spec changes, deletion, finalizer changes and
// reconcile requests, not the controller's own status patches.
var quarantineChanged = predicate.Or(
	predicate.GenerationChangedPredicate{},
	predicate.AnnotationChangedPredicate{},
	predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return true },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return finalizersChangedByOthers(e.ObjectOld.GetFinalizers(), e.ObjectNew.GetFinalizers()) ||
				!e.ObjectNew.GetDeletionTimestamp().IsZero()
		},
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return true },
	},
)

// finalizersChangedByOthers reports a finalizer change other than the
// controller appending its own: the pass that added it went on in the same
// reconcile, so that update needs no second pass.
func finalizersChangedByOthers(old, cur []string) bool {
	if slices.Equal(old, cur) {
		return false
	}
	ownAdded := !slices.Contains(old, securityv1alpha1.QuarantineFinalizer) &&
		slices.Equal(append(slices.Clone(old), securityv1alpha1.QuarantineFinalizer), cur)
	return !ownAdded
}

// notCreated drops create events of owned NetworkPolicies: the controller
// made them itself; edits and deletions are tampering.
var notCreated = predicate.Funcs{CreateFunc: func(event.CreateEvent) bool { return false }}

// quarantineLabelChanged passes pod events where the quarantine label was
// removed or changed (tampering), not where the controller added it.
var quarantineLabelChanged = predicate.Funcs{
	CreateFunc: func(e event.CreateEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.GetLabels()[securityv1alpha1.QuarantineLabel], e.ObjectNew.GetLabels()[securityv1alpha1.QuarantineLabel]
		return o != "" && o != n
	},
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
}

// podToQuarantine maps a pod to the Quarantine named by its label; for an
// update it is called with both the old and the new pod.
func podToQuarantine(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[securityv1alpha1.QuarantineLabel]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: name}}}
}

// podToQuarantines maps a pod whose quarantine label was removed or
// changed to the Quarantine the label names and to every other one that
// holds the pod: a second holder kept the first one's label on the pod
// (its policy selects it by its own), so once that label goes, the label
// is its to put, now rather than at its re-check.
func (r *QuarantineReconciler) podToQuarantines(ctx context.Context, o client.Object) []reconcile.Request {
	reqs := podToQuarantine(ctx, o)
	if len(reqs) == 0 || r.cachedHolders == nil {
		return reqs
	}
	list := &securityv1alpha1.QuarantineList{}
	if err := r.cachedHolders.List(ctx, list, client.InNamespace(o.GetNamespace()), client.UnsafeDisableDeepCopy); err != nil {
		return reqs // the re-check repairs it
	}
	for i := range list.Items {
		q := &list.Items[i]
		if q.Name == reqs[0].Name || q.IsReleased() {
			continue
		}
		holds := kubeutil.IsPodTarget(q.Spec.Target) && q.Spec.Target.Name == o.GetName()
		if !holds && q.Status.Target != nil {
			holds = slices.Contains(q.Status.Target.Pods, o.GetName())
		}
		if holds {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(q)})
		}
	}
	return reqs
}

func (r *QuarantineReconciler) engine() *containment.Engine {
	return &containment.Engine{Client: r.Client, Reader: r.APIReader, MinSchedulableNodes: r.MinSchedulableNodes, Now: r.Now, Served: r.served}
}
