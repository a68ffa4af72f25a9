package threatpolicy

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/scoring"
)

// ContainmentReconciler decides, per pod, what the policies whose threshold
// held call for, and writes the one Quarantine of that pod. It also
// releases a policy's Quarantine when autoReleaseAfter is due and the score
// has fallen.
type ContainmentReconciler struct {
	client.Client
	// APIReader reads the pause switch without caching every ConfigMap.
	APIReader        client.Reader
	Engine           *Engine
	Recorder         events.EventRecorder
	ManagerNamespace string
	// MaxActive caps unreleased policy Quarantines cluster-wide; 0: no cap.
	MaxActive int
	// Now is the clock (tests).
	Now func() time.Time

	// MaxConcurrentReconciles is how many pods are handled in parallel;
	// decisions themselves are serialised by decideMu (budgets), the writes
	// that carry them out are not.
	MaxConcurrentReconciles int

	// decideMu makes reading the budgets and reserving a slot one step, so
	// two parallel decisions cannot both take the last slot.
	decideMu sync.Mutex
	// pending counts this controller's writes the cache does not show yet.
	pending ledger
}

// +kubebuilder:rbac:groups=security.bulkhead.dev,resources=quarantines,verbs=get;list;watch;create;patch;release
// +kubebuilder:rbac:groups=security.bulkhead.dev,resources=quarantines/status,verbs=get;patch
// +kubebuilder:rbac:groups="",resources=pods;namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",namespace=bulkhead-system,resources=configmaps,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile handles one pod: a decision when a new signal asks for one, and
// the auto-release of its Quarantine.
func (r *ContainmentReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	key := detector.PodKey{Namespace: req.Namespace, Pod: req.Name}
	pod := &corev1.Pod{}
	if err := r.Get(ctx, req.NamespacedName, pod); err != nil {
		if apierrors.IsNotFound(err) {
			r.Engine.Forget(key, "")
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if evals := r.Engine.Take(key); len(evals) > 0 {
		again, err := r.decide(ctx, pod, evals)
		if err != nil || again > 0 {
			r.Engine.Retry(key, evals)
			return ctrl.Result{RequeueAfter: again}, err
		}
	}
	w, err := r.observe(ctx, pod, false)
	if err != nil {
		return ctrl.Result{}, err
	}
	return r.autoRelease(ctx, w)
}

// world is the cluster state one decision reads.
type world struct {
	pod      *corev1.Pod
	policies map[string]*securityv1alpha1.ThreatPolicy
	env      policy.Env
	names    map[string]bool // Quarantine names taken in the namespace
}

// observe reads policies and Quarantines from the cache. Only a decision,
// under decideMu, counts the pending writes (count), which also forgets the
// ones the cache now shows.
func (r *ContainmentReconciler) observe(ctx context.Context, pod *corev1.Pod, count bool) (*world, error) {
	w := &world{pod: pod, policies: map[string]*securityv1alpha1.ThreatPolicy{}, names: map[string]bool{}}
	w.env = policy.Env{Now: r.Now(), ManagerNamespace: r.ManagerNamespace, Pod: pod, ActiveByPolicy: map[string]int{}, MaxActive: r.MaxActive}
	// Read-only views of the cache: no deep copy of every Quarantine per
	// decision. Nothing below may modify them.
	var tps securityv1alpha1.ThreatPolicyList
	if err := r.List(ctx, &tps, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	for i := range tps.Items {
		w.policies[tps.Items[i].Name] = &tps.Items[i]
	}
	var qs securityv1alpha1.QuarantineList
	if err := r.List(ctx, &qs, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	listed := make(map[types.NamespacedName]*securityv1alpha1.Quarantine, len(qs.Items))
	for i := range qs.Items {
		q := &qs.Items[i]
		listed[types.NamespacedName{Namespace: q.Namespace, Name: q.Name}] = q
		samePod := q.Namespace == pod.Namespace && q.Spec.Target.Name == pod.Name && (q.Spec.Target.Kind == "" || q.Spec.Target.Kind == securityv1alpha1.TargetPod)
		if q.Namespace == pod.Namespace {
			w.names[q.Name] = true
		}
		if q.IsReleased() {
			if samePod && q.Status.ReleasedAt != nil && q.Status.ReleasedAt.After(w.env.LastRelease) {
				w.env.LastRelease = q.Status.ReleasedAt.Time
			} else if samePod && w.env.LastRelease.IsZero() {
				// Released but not yet undone: the cooldown starts now.
				w.env.LastRelease = w.env.Now
			}
			continue
		}
		if q.Annotations[securityv1alpha1.CreatedByPolicyAnnotation] != "" {
			w.env.ActiveTotal++
			if q.Spec.Reason != nil {
				for _, p := range q.Spec.Reason.Policies {
					w.env.ActiveByPolicy[p]++
				}
			}
		}
		// A policy's own Quarantine wins over a hand-made one for the same pod.
		if samePod && (w.env.Existing == nil || q.Annotations[securityv1alpha1.CreatedByPolicyAnnotation] != "") {
			w.env.Existing = q
		}
	}
	if count {
		r.pending.count(listed, &w.env)
	}
	return w, nil
}

func (r *ContainmentReconciler) paused(ctx context.Context) (bool, error) {
	cm := &corev1.ConfigMap{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: r.ManagerNamespace, Name: securityv1alpha1.ControlConfigMap}, cm)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading the pause switch: %w", err)
	}
	return cm.Data[securityv1alpha1.PausedKey] == "true", nil
}

// decide runs the policy decision and carries it out. Reading the budgets,
// deciding and reserving what the decision takes happen under decideMu;
// the API writes do not, so pods are contained in parallel. A positive
// duration asks to decide again then, with the same evaluations.
func (r *ContainmentReconciler) decide(ctx context.Context, pod *corev1.Pod, latest map[string]policy.Evaluation) (time.Duration, error) {
	// Read live, before the lock: the pause switch is the emergency brake.
	paused, err := r.paused(ctx)
	if err != nil {
		return 0, err
	}
	r.decideMu.Lock()
	w, err := r.observe(ctx, pod, true)
	if err != nil {
		r.decideMu.Unlock()
		return 0, err
	}
	w.env.Paused = paused
	var evals []policy.Evaluation
	for name, ev := range latest {
		p, ok := w.policies[name]
		if !ok {
			continue
		}
		// The policy may have changed since; judge by its current spec.
		ev.Policy = p
		evals = append(evals, ev)
	}
	slices.SortFunc(evals, func(a, b policy.Evaluation) int { return strings.Compare(a.Policy.Name, b.Policy.Name) })
	out := policy.Decide(evals, w.env)
	if w.env.Existing == nil && r.pending.creating(pod.Namespace, pod.Name) {
		// The pod's Quarantine is on its way to the cache: decide again
		// once it is there, so these evaluations join it instead of making
		// a duplicate.
		r.decideMu.Unlock()
		return time.Second, nil
	}
	var reservation types.NamespacedName
	if out.Create != nil {
		reservation = r.reserve(w, out.Create)
	}
	if out.Update != nil {
		r.reserveJoin(w, out.Update)
	}
	r.decideMu.Unlock()

	qName := ""
	switch {
	case out.Create != nil:
		name, err := r.create(ctx, w, out.Create, reservation)
		if err != nil {
			return 0, err
		}
		qName = name
	case out.Update != nil:
		if err := r.applySpec(ctx, w.env.Existing, out.Update); err != nil {
			return 0, err
		}
		qName = w.env.Existing.Name
	case w.env.Existing != nil:
		qName = w.env.Existing.Name
	}
	if len(out.Recommendations) > 0 && w.env.Existing != nil {
		if err := r.recommend(ctx, w.env.Existing, out.Recommendations); err != nil {
			return 0, err
		}
	}
	for name, plan := range out.Plans {
		r.Engine.AddPlan(name, plan)
		r.Recorder.Eventf(w.pod, nil, corev1.EventTypeWarning, "WouldQuarantine", "Plan",
			"policy %s would quarantine this pod at score %s with %v%s", name, plan.Score, plan.Actions, blocked(plan.BlockedBy))
	}
	for name, score := range out.Triggers {
		t := securityv1alpha1.Trigger{Time: metav1.NewTime(w.env.Now), Namespace: w.pod.Namespace, Pod: w.pod.Name, Score: scoring.FormatScore(score)}
		if _, planned := out.Plans[name]; !planned {
			t.Quarantine = qName
		}
		r.Engine.SetTrigger(name, t)
	}
	return 0, nil
}

// reserve picks a free name for the new Quarantine and counts it against
// the budgets until the cache shows it, or its create is refused.
func (r *ContainmentReconciler) reserve(w *world, spec *securityv1alpha1.QuarantineSpec) types.NamespacedName {
	name := policy.Name(w.pod.Name, func(n string) bool {
		return w.names[n] || r.pending.taken(types.NamespacedName{Namespace: w.pod.Namespace, Name: n})
	})
	key := types.NamespacedName{Namespace: w.pod.Namespace, Name: name}
	r.pending.create(key, w.pod.Name, spec.Reason.Policies, r.Now())
	return key
}

// reserveJoin counts the policies an update adds to the existing
// Quarantine against their budgets until the cache shows them. A failed
// update keeps them counted until unseenGrace: over-counting briefly only
// delays, under-counting would exceed a budget.
func (r *ContainmentReconciler) reserveJoin(w *world, spec *securityv1alpha1.QuarantineSpec) {
	q := w.env.Existing
	var had []string
	if q.Spec.Reason != nil {
		had = q.Spec.Reason.Policies
	}
	var added []string
	if spec.Reason != nil {
		for _, p := range spec.Reason.Policies {
			if !slices.Contains(had, p) {
				added = append(added, p)
			}
		}
	}
	if len(added) > 0 {
		r.pending.join(types.NamespacedName{Namespace: q.Namespace, Name: q.Name}, w.pod.Name, added, r.Now())
	}
}

func blocked(by string) string {
	if by == "" {
		return ""
	}
	return ", but " + by + " would block it"
}

// create writes the new Quarantine under its reserved name. Create, not
// apply: it must fail when the name was taken meanwhile, so another name is
// tried (and reserved instead).
func (r *ContainmentReconciler) create(ctx context.Context, w *world, spec *securityv1alpha1.QuarantineSpec, key types.NamespacedName) (string, error) {
	spec.Target = securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: w.pod.Name}
	for range 10 {
		q := &securityv1alpha1.Quarantine{
			ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace,
				Labels: map[string]string{
					securityv1alpha1.ManagedByLabel: securityv1alpha1.ManagedByValue,
					securityv1alpha1.PolicyLabel:    spec.Reason.Policy,
				},
				Annotations: map[string]string{
					securityv1alpha1.CreatedByPolicyAnnotation:    spec.Reason.Policy,
					securityv1alpha1.ArgoCompareOptionsAnnotation: securityv1alpha1.ArgoCompareOptionsValue,
					securityv1alpha1.FluxReconcileAnnotation:      securityv1alpha1.FluxReconcileValue,
				},
			},
			Spec: *spec,
		}
		err := r.Create(ctx, q, client.FieldOwner(securityv1alpha1.FieldManager))
		if apierrors.IsAlreadyExists(err) {
			w.names[key.Name] = true
			r.decideMu.Lock()
			r.pending.dropCreate(key)
			key = r.reserve(w, spec)
			r.decideMu.Unlock()
			continue
		}
		if err != nil && !r.createdAnyway(ctx, key, w.pod.Name, err) {
			return "", fmt.Errorf("creating Quarantine %s/%s: %w", key.Namespace, key.Name, err)
		}
		logf.FromContext(ctx).Info("quarantine created", "quarantine", key.Name, "policies", spec.Reason.Policies, "score", spec.Reason.Score)
		r.Recorder.Eventf(w.pod, q, corev1.EventTypeWarning, "Quarantined", "Create",
			"policies %v scored this pod %s: Quarantine %s", spec.Reason.Policies, spec.Reason.Score, key.Name)
		return key.Name, nil
	}
	r.pending.dropCreate(key)
	return "", fmt.Errorf("no free Quarantine name for pod %s/%s", w.pod.Namespace, w.pod.Name)
}

// createdAnyway settles a failed create. A refusal gives the slot back; a
// timeout or a lost connection may have created it all the same, so the
// API server is asked: found for this pod, it counts as created; found
// missing, the slot is given back; unknown, the slot stays counted until
// unseenGrace (the pod is decided again then).
func (r *ContainmentReconciler) createdAnyway(ctx context.Context, key types.NamespacedName, pod string, err error) bool {
	if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsBadRequest(err) ||
		apierrors.IsNotFound(err) || apierrors.IsUnauthorized(err) || apierrors.IsMethodNotSupported(err) {
		r.pending.dropCreate(key)
		return false
	}
	q := &securityv1alpha1.Quarantine{}
	switch gerr := r.APIReader.Get(ctx, key, q); {
	case gerr == nil && q.Spec.Target.Name == pod:
		return true
	case apierrors.IsNotFound(gerr):
		r.pending.dropCreate(key)
	}
	return false
}

// applySpec writes the fields the policy controller owns on its own
// Quarantine: actions, reason and autoReleaseAfter (never approved or
// released, which humans flip).
func (r *ContainmentReconciler) applySpec(ctx context.Context, q *securityv1alpha1.Quarantine, spec *securityv1alpha1.QuarantineSpec) error {
	fields := map[string]any{"actions": spec.Actions, "reason": spec.Reason}
	if spec.AutoReleaseAfter != nil {
		fields["autoReleaseAfter"] = spec.AutoReleaseAfter
	}
	return r.apply(ctx, q, nil, fields)
}

// apply server-side applies metadata annotations and spec fields to q.
func (r *ContainmentReconciler) apply(ctx context.Context, q *securityv1alpha1.Quarantine, annotations map[string]string, spec map[string]any) error {
	obj := map[string]any{
		"apiVersion": securityv1alpha1.GroupVersion.String(), "kind": "Quarantine",
		"metadata": map[string]any{"name": q.Name, "namespace": q.Namespace, "uid": string(q.UID)},
	}
	if len(annotations) > 0 {
		obj["metadata"].(map[string]any)["annotations"] = annotations
	}
	if len(spec) > 0 {
		obj["spec"] = spec
	}
	u, err := toUnstructured(obj)
	if err != nil {
		return err
	}
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner(securityv1alpha1.FieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("applying Quarantine %s/%s: %w", q.Namespace, q.Name, err)
	}
	return nil
}

// toUnstructured round-trips typed values (actions, durations) to JSON maps.
func toUnstructured(obj map[string]any) (*unstructured.Unstructured, error) {
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(data); err != nil {
		return nil, err
	}
	return u, nil
}

// recommend appends escalations not already recommended to the
// Quarantine's status (a merge patch of that list only: its other status
// fields belong to the Quarantine controller).
func (r *ContainmentReconciler) recommend(ctx context.Context, q *securityv1alpha1.Quarantine, recs []securityv1alpha1.Recommendation) error {
	// q is a read-only view of the cache: append to a copy.
	have := slices.Clone(q.Status.Recommendations)
	changed := false
	for _, rec := range recs {
		if slices.ContainsFunc(have, func(h securityv1alpha1.Recommendation) bool {
			return h.Policy == rec.Policy && slices.Equal(h.Actions, rec.Actions)
		}) {
			continue
		}
		have = append(have, rec)
		changed = true
		r.Recorder.Eventf(q, nil, corev1.EventTypeWarning, "EscalationRecommended", "Recommend",
			"policy %s reached score %s: consider adding %v", rec.Policy, rec.Score, rec.Actions)
	}
	if !changed {
		return nil
	}
	if len(have) > 10 {
		have = have[len(have)-10:]
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"recommendations": have}})
	if err != nil {
		return err
	}
	// A fresh object: Patch decodes the reply into it, and q belongs to the cache.
	target := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: q.Namespace, Name: q.Name}}
	return r.Status().Patch(ctx, target, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(securityv1alpha1.FieldManager))
}

// autoRelease releases a policy's Quarantine once autoReleaseAfter is due
// and the score has fallen below every contributor's threshold; otherwise
// it extends by autoReleaseAfter and says so.
func (r *ContainmentReconciler) autoRelease(ctx context.Context, w *world) (ctrl.Result, error) {
	q := w.env.Existing
	if q == nil {
		return ctrl.Result{}, nil
	}
	due, ok := policy.AutoReleaseDue(q)
	if !ok {
		return ctrl.Result{}, nil
	}
	if wait := due.Sub(w.env.Now); wait > 0 {
		return ctrl.Result{RequeueAfter: jitter(wait)}, nil
	}
	var evals []policy.Evaluation
	for _, name := range q.Spec.Reason.Policies {
		if p, ok := w.policies[name]; ok {
			evals = append(evals, r.Engine.Evaluate(ctx, p, w.pod))
		}
	}
	if policy.FallenBelow(evals) {
		if err := r.apply(ctx, q, map[string]string{securityv1alpha1.ActorAnnotation: policy.AutoReleaseActor},
			map[string]any{"released": true}); err != nil {
			return ctrl.Result{}, err
		}
		r.Recorder.Eventf(q, w.pod, corev1.EventTypeNormal, "AutoReleased", "Release",
			"autoReleaseAfter %s passed and the score has fallen below the threshold", q.Spec.AutoReleaseAfter.Duration)
		return ctrl.Result{}, nil
	}
	next := w.env.Now.Add(q.Spec.AutoReleaseAfter.Duration)
	if err := r.apply(ctx, q, map[string]string{policy.AutoReleaseAtAnnotation: next.UTC().Format(time.RFC3339)}, nil); err != nil {
		return ctrl.Result{}, err
	}
	r.Recorder.Eventf(q, w.pod, corev1.EventTypeWarning, "AutoReleaseExtended", "Extend",
		"the score is still at or above the threshold: auto-release extended to %s", next.UTC().Format(time.RFC3339))
	return ctrl.Result{RequeueAfter: jitter(q.Spec.AutoReleaseAfter.Duration)}, nil
}

// jitter adds up to 10% so many timers do not fire together.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d)/10+1))
}

// SetupWithManager watches the engine's triggers, and Quarantines (mapped
// to their pod) so auto-release timers survive restarts.
func (r *ContainmentReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.MaxConcurrentReconciles == 0 {
		r.MaxConcurrentReconciles = 8
	}
	toPod := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		q, ok := o.(*securityv1alpha1.Quarantine)
		if !ok || q.Annotations[securityv1alpha1.CreatedByPolicyAnnotation] == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: q.Namespace, Name: q.Spec.Target.Name}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("threatpolicy-containment").
		WatchesRawSource(source.Channel(r.Engine.Pods, &handler.EnqueueRequestForObject{})).
		// Auto-release depends on spec and annotations only, not on the
		// status writes every containment makes several of.
		Watches(&securityv1alpha1.Quarantine{}, toPod, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Complete(r)
}
