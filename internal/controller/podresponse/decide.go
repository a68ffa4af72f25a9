package podresponse

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	toolscache "k8s.io/client-go/tools/cache"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/provenance"
	"github.com/bulkhead-dev/bulkhead/internal/scoring"
)

// world is the cluster state one decision reads.
type world struct {
	pod      *corev1.Pod
	policies map[string]*securityv1alpha1.ThreatPolicy
	env      policy.Env
	names    map[string]bool // Quarantine names taken in the namespace
	signer   *provenance.Signer
}

// observe reads policies and Quarantines from the cache. Only a decision,
// under decideMu, counts the pending writes (count), which also forgets the
// ones the cache now shows.
func (r *Reconciler) observe(ctx context.Context, pod *corev1.Pod, count bool) (*world, error) {
	signer, err := r.Provenance.Signer(ctx)
	if err != nil {
		return nil, err
	}
	w := &world{pod: pod, policies: map[string]*securityv1alpha1.ThreatPolicy{}, names: map[string]bool{}, signer: signer}
	made := func(q *securityv1alpha1.Quarantine) bool { return r.verified.made(signer, q) }
	w.env = policy.Env{Now: r.Now(), ManagerNamespace: r.ManagerNamespace, Pod: pod, ActiveByPolicy: map[string]int{}, MaxActive: r.MaxActive,
		MadeByPolicy: made, ActiveInNamespace: map[string]int{}, Cordons: map[string]int{}}
	share := r.NamespaceShare
	if share <= 0 {
		share = 50
	}
	w.env.MaxActiveInNamespace = policy.ShareOf(r.MaxActive, share)
	// Read-only views of the cache: no deep copy of every Quarantine per
	// decision. Nothing below may modify them.
	var tps securityv1alpha1.ThreatPolicyList
	if err := r.List(ctx, &tps, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	for i := range tps.Items {
		w.policies[tps.Items[i].Name] = &tps.Items[i]
	}
	qs, err := r.cachedQuarantines(ctx)
	if err != nil {
		return nil, err
	}
	listed := make(map[types.NamespacedName]*securityv1alpha1.Quarantine, len(qs))
	for _, q := range qs {
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
		// Only what the manager made counts: a forged created-by annotation
		// must not spend budgets or the cap.
		if made(q) {
			w.env.ActiveTotal++
			if q.Namespace == pod.Namespace {
				w.env.ActiveTotalInNamespace++
			}
			if q.Spec.Reason != nil {
				cordon := policy.HasCordon(q)
				for _, p := range q.Spec.Reason.Policies {
					w.env.ActiveByPolicy[p]++
					if q.Namespace == pod.Namespace {
						w.env.ActiveInNamespace[p]++
					}
					if cordon {
						w.env.Cordons[p]++
					}
				}
			}
		}
		// A policy's own Quarantine wins over a hand-made one for the same
		// pod, and a hand-made one that holds it over one that holds nothing.
		if samePod && (w.env.Existing == nil || rank(made, q) > rank(made, w.env.Existing)) {
			w.env.Existing = q
		}
	}
	r.verified.keepOnly(qs)
	if count {
		r.pending.count(listed, &w.env)
	}
	return w, nil
}

// cachedQuarantines are all the Quarantines of the cache, read-only: the
// informer's own objects when the cache has one (SetupWithManager), else a
// List. A List copies every Quarantine into its result; with one per
// decision, under decideMu, a burst of 200 spent most of each decision
// copying.
func (r *Reconciler) cachedQuarantines(ctx context.Context) ([]*securityv1alpha1.Quarantine, error) {
	if store := r.quarantineStore(ctx); store != nil {
		items := store.List()
		out := make([]*securityv1alpha1.Quarantine, 0, len(items))
		for _, o := range items {
			q, ok := o.(*securityv1alpha1.Quarantine)
			if !ok {
				// Skipping it would undercount the budgets and caps.
				return nil, fmt.Errorf("the Quarantine cache holds a %T", o)
			}
			out = append(out, q)
		}
		return out, nil
	}
	var qs securityv1alpha1.QuarantineList
	if err := r.List(ctx, &qs, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	out := make([]*securityv1alpha1.Quarantine, len(qs.Items))
	for i := range qs.Items {
		out[i] = &qs.Items[i]
	}
	return out, nil
}

// quarantineStore is the store of the cache's Quarantine informer, looked
// up on first use (the informer exists by then: the controller watches
// Quarantines); nil without a cache or before it is synced.
func (r *Reconciler) quarantineStore(ctx context.Context) toolscache.Store {
	if r.cache == nil {
		return nil
	}
	r.storeMu.Lock()
	defer r.storeMu.Unlock()
	if r.store != nil {
		return r.store
	}
	inf, err := r.cache.GetInformer(ctx, &securityv1alpha1.Quarantine{}, cache.BlockUntilSynced(false))
	if err != nil || !inf.HasSynced() {
		return nil
	}
	if s, ok := inf.(interface{ GetStore() toolscache.Store }); ok {
		r.store = s.GetStore()
	}
	return r.store
}

func (r *Reconciler) paused(ctx context.Context) (bool, error) {
	cm := &corev1.ConfigMap{}
	err := r.PauseReader.Get(ctx, client.ObjectKey{Namespace: r.ManagerNamespace, Name: securityv1alpha1.ControlConfigMap}, cm)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading the pause switch: %w", err)
	}
	return cm.Data[securityv1alpha1.PausedKey] == "true", nil
}

// decision is what one pass over a pod decided, with the Quarantine name
// it reserved.
type decision struct {
	w           *world
	out         policy.Outcome
	reservation types.NamespacedName
	// again asks to decide again after this long, with the same evaluations.
	again time.Duration
}

// decide runs the policy decision and carries it out: gather reads the
// budgets, decides and reserves what the decision takes under decideMu;
// execute makes the API writes without it, so pods are contained in
// parallel. A positive duration asks to decide again then, with the same
// evaluations.
func (r *Reconciler) decide(ctx context.Context, pod *corev1.Pod, latest map[string]policy.Evaluation) (time.Duration, error) {
	// Before the lock, from its own cache (a watch: a pause is seen as soon
	// as the API server tells, like a live read racing a decision in flight).
	paused, err := r.paused(ctx)
	if err != nil {
		return 0, err
	}
	d, err := r.gather(ctx, pod, latest, paused)
	if err != nil || d.again > 0 {
		return d.again, err
	}
	return 0, r.execute(ctx, d)
}

// gather observes the cluster, decides with policy.Decide and reserves
// what the outcome takes, as one step under decideMu.
func (r *Reconciler) gather(ctx context.Context, pod *corev1.Pod, latest map[string]policy.Evaluation, paused bool) (*decision, error) {
	r.decideMu.Lock()
	defer r.decideMu.Unlock()
	w, err := r.observe(ctx, pod, true)
	if err != nil {
		return &decision{}, err
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
	d := &decision{w: w, out: policy.Decide(evals, w.env)}
	if w.env.Existing == nil && r.pending.creating(pod.Namespace, pod.Name) {
		// The pod's Quarantine is on its way to the cache: decide again
		// once it is there, so these evaluations join it instead of making
		// a duplicate.
		return &decision{again: time.Second}, nil
	}
	if d.out.Create != nil {
		d.reservation = r.reserve(w, d.out.Create)
	}
	if d.out.Update != nil && !d.out.HandMade {
		r.reserveJoin(w, d.out.Update)
	}
	return d, nil
}

// execute carries a decision out: the Quarantine write, recommendations,
// plans and triggers. It holds no lock.
func (r *Reconciler) execute(ctx context.Context, d *decision) error {
	w, out := d.w, d.out
	qName := ""
	switch {
	case out.Create != nil:
		name, err := r.create(ctx, w, out.Create, d.reservation)
		if err != nil {
			return err
		}
		qName = name
	case out.Update != nil && out.HandMade:
		if err := r.escalate(ctx, w, out.Update); err != nil {
			return err
		}
		qName = w.env.Existing.Name
	case out.Update != nil:
		if err := r.applySpec(ctx, w.env.Existing, out.Update); err != nil {
			return err
		}
		qName = w.env.Existing.Name
	case w.env.Existing != nil:
		qName = w.env.Existing.Name
	}
	if len(out.Recommendations) > 0 && w.env.Existing != nil {
		if err := r.recommend(ctx, w.env.Existing, out.Recommendations); err != nil {
			return err
		}
	}
	for _, name := range out.CordonCapped {
		if r.planEvent("CordonCapReached") {
			r.Recorder.Eventf(w.pod, nil, corev1.EventTypeWarning, "CordonCapReached", "Contain",
				"policy %s left CordonNode out: its maxCordonedNodes is reached (the other actions still apply)", name)
		}
	}
	for name, plan := range out.Plans {
		r.Activity.AddPlan(name, plan)
		if r.planEvent("WouldQuarantine") {
			r.Recorder.Eventf(w.pod, nil, corev1.EventTypeWarning, "WouldQuarantine", "Plan",
				"policy %s would quarantine this pod at score %s with %v%s", name, plan.Score, plan.Actions, blocked(plan.BlockedBy))
		}
	}
	for name, score := range out.Triggers {
		t := securityv1alpha1.Trigger{Time: metav1.NewTime(w.env.Now), Namespace: w.pod.Namespace, Pod: w.pod.Name, Score: scoring.FormatScore(score)}
		if _, planned := out.Plans[name]; !planned {
			t.Quarantine = qName
		}
		r.Activity.SetTrigger(name, t)
	}
	return nil
}

// reserve picks a free name for the new Quarantine and counts it against
// the budgets until the cache shows it, or its create is refused. Only
// under decideMu.
func (r *Reconciler) reserve(w *world, spec *securityv1alpha1.QuarantineSpec) types.NamespacedName {
	name := policy.Name(w.pod.Name, func(n string) bool {
		return w.names[n] || r.pending.taken(types.NamespacedName{Namespace: w.pod.Namespace, Name: n})
	})
	key := types.NamespacedName{Namespace: w.pod.Namespace, Name: name}
	r.pending.create(key, w.pod.Name, spec.Reason.Policies, r.Now(), slices.ContainsFunc(spec.Actions, func(a securityv1alpha1.Action) bool {
		return a.Type == securityv1alpha1.ActionCordonNode
	}))
	return key
}

// reserveJoin counts the policies an update adds to the existing
// Quarantine against their budgets until the cache shows them. A failed
// update keeps them counted until unseenGrace: over-counting briefly only
// delays, under-counting would exceed a budget.
func (r *Reconciler) reserveJoin(w *world, spec *securityv1alpha1.QuarantineSpec) {
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

// reserveAgain gives back a reservation whose name turned out taken and
// reserves another.
func (r *Reconciler) reserveAgain(w *world, spec *securityv1alpha1.QuarantineSpec, taken types.NamespacedName) types.NamespacedName {
	r.decideMu.Lock()
	defer r.decideMu.Unlock()
	w.names[taken.Name] = true
	r.pending.dropCreate(taken)
	return r.reserve(w, spec)
}

// rank orders the Quarantines of one pod: the policies' own, then a
// hand-made one that holds the pod, then one that holds nothing.
func rank(made func(*securityv1alpha1.Quarantine) bool, q *securityv1alpha1.Quarantine) int {
	switch {
	case made(q):
		return 2
	case policy.Supersedable(q):
		return 0
	}
	return 1
}

func blocked(by string) string {
	if by == "" {
		return ""
	}
	return ", but " + by + " would block it"
}

// planEvent reports whether an Event about a plan (not a containment) may
// be written now. client-go writes each Event in its own goroutine and
// request: a flood of scores over an exhausted budget made ~1,000 at once
// and, with many decision workers, doubled the manager's memory. Beyond
// the rate they are counted instead; ThreatPolicy status keeps the plans.
func (r *Reconciler) planEvent(reason string) bool {
	if r.PlanEvents == nil || r.PlanEvents.Allow() {
		return true
	}
	metrics.EventsSuppressed.WithLabelValues(reason).Inc()
	return false
}
