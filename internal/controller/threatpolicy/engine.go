package threatpolicy

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/exposure"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/scoring"
)

// maxPlans is how many plans a policy's status keeps.
const maxPlans = 50

// Engine is the detector.Sink ingestion records into: it stores each signal
// and evaluates every policy that covers the pod and weighs the detector
// (one evaluation per accepted signal), keeping each policy's streak. When a
// threshold has held for sustain evaluations it hands the pod to the
// containment controller; the API writes happen there, off the ingest path.
type Engine struct {
	Store    *detector.Store
	Reader   client.Reader
	Exposure *exposure.Assessor
	// Registry knows the detectors that exist; ingestion adds external ones.
	Registry *detector.Registry

	// Pods and Policies feed the two controllers (source.Channel).
	Pods     chan event.GenericEvent
	Policies chan event.GenericEvent

	mu sync.Mutex
	// evals holds each pod's latest evaluation per policy.
	evals map[detector.PodKey]map[string]*policy.Evaluation
	// pending holds, per pod, the evaluations that reached their policy's
	// trigger and await a decision: the containment controller takes them,
	// so only new signals can contain, and a lower score arriving before the
	// decision does not erase the trigger.
	pending  map[detector.PodKey]map[string]policy.Evaluation
	policies map[string]*policyState
	misconf  map[string]scoring.Adjustment // by pod UID: the spec is immutable enough
}

// policyState is what a policy's status reports that only the engine knows.
type policyState struct {
	dirty       bool
	lastSignal  map[string]time.Time
	lastTrigger *securityv1alpha1.Trigger
	plans       []securityv1alpha1.Plan
}

// NewEngine returns an engine recording into store.
func NewEngine(store *detector.Store, reader client.Reader, assessor *exposure.Assessor) *Engine {
	return &Engine{
		Store: store, Reader: reader, Exposure: assessor, Registry: detector.NewRegistry(),
		Pods: make(chan event.GenericEvent, 1024), Policies: make(chan event.GenericEvent, 1024),
		evals: map[detector.PodKey]map[string]*policy.Evaluation{}, pending: map[detector.PodKey]map[string]policy.Evaluation{},
		policies: map[string]*policyState{}, misconf: map[string]scoring.Adjustment{},
	}
}

// Record stores signals and evaluates the policies covering their pods.
func (e *Engine) Record(ctx context.Context, signals []detector.Signal) error {
	if err := e.Store.Record(ctx, signals); err != nil {
		return err
	}
	var list securityv1alpha1.ThreatPolicyList
	if err := e.Reader.List(ctx, &list); err != nil {
		return fmt.Errorf("listing policies: %w", err)
	}
	policy.SortedPolicies(list.Items)
	now := time.Now()
	for i := range signals {
		s := &signals[i]
		metrics.Scores.WithLabelValues(s.Detector).Observe(s.Score)
		metrics.DetectorLastSignal.WithLabelValues(s.Detector).Set(float64(now.Unix()))
		if err := e.evaluate(ctx, s, list.Items, now); err != nil {
			return err
		}
	}
	return nil
}

func (e *Engine) evaluate(ctx context.Context, s *detector.Signal, policies []securityv1alpha1.ThreatPolicy, now time.Time) error {
	key := detector.PodKey{Namespace: s.Namespace, Pod: s.Pod}
	pod, ns, err := e.podAndNamespace(ctx, key)
	if err != nil || pod == nil {
		return err
	}
	var fresh map[string]detector.Entry
	var triggered bool
	for i := range policies {
		p := &policies[i]
		if !policy.Uses(p, s.Detector) {
			continue
		}
		if ok, err := policy.Selects(p, ns, pod); err != nil || !ok {
			continue
		}
		if fresh == nil {
			fresh = e.Store.Fresh(key)
		}
		ev := e.evaluation(ctx, p, pod, fresh)
		metrics.Scores.WithLabelValues("effective").Observe(ev.Result.Score)
		e.mu.Lock()
		byPolicy := e.evals[key]
		if byPolicy == nil {
			byPolicy = map[string]*policy.Evaluation{}
			e.evals[key] = byPolicy
		}
		if prev := byPolicy[p.Name]; prev != nil && ev.Result.Score >= policy.Threshold(p) {
			ev.Streak = prev.Streak + 1
		} else if ev.Result.Score >= policy.Threshold(p) {
			ev.Streak = 1
		}
		byPolicy[p.Name] = &ev
		st := e.state(p.Name)
		st.lastSignal[s.Detector] = now
		notify := !st.dirty
		st.dirty = true
		if ev.Triggered() {
			if e.pending[key] == nil {
				e.pending[key] = map[string]policy.Evaluation{}
			}
			e.pending[key][p.Name] = ev
			triggered = true
		}
		e.mu.Unlock()
		if notify {
			send(ctx, e.Policies, &securityv1alpha1.ThreatPolicy{ObjectMeta: metav1.ObjectMeta{Name: p.Name}})
		}
	}
	if triggered {
		send(ctx, e.Pods, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Pod}})
	}
	return nil
}

// Evaluate scores pod for p from the fresh scores now, without counting it
// as an evaluation (auto-release asks whether the score has fallen).
func (e *Engine) Evaluate(ctx context.Context, p *securityv1alpha1.ThreatPolicy, pod *corev1.Pod) policy.Evaluation {
	return e.evaluation(ctx, p, pod, e.Store.Fresh(detector.PodKey{Namespace: pod.Namespace, Pod: pod.Name}))
}

func (e *Engine) evaluation(ctx context.Context, p *securityv1alpha1.ThreatPolicy, pod *corev1.Pod, fresh map[string]detector.Entry) policy.Evaluation {
	var adj []scoring.Adjustment
	if p.Spec.Scoring.Exposure.Misconfiguration {
		adj = append(adj, e.misconfiguration(pod))
	}
	if p.Spec.Scoring.Exposure.Vulnerabilities {
		a, ok, err := e.Exposure.Vulnerabilities(ctx, pod)
		if err != nil {
			logf.FromContext(ctx).Error(err, "vulnerability exposure", "pod", client.ObjectKeyFromObject(pod))
		} else if ok {
			adj = append(adj, a)
		}
	}
	r := scoring.Fuse(p.Spec.Detectors, fresh, adj)
	// The summary says how the score was made, then what the top detector
	// saw (cut first when long), so a Quarantine explains itself.
	reason := "[" + scoring.Explain(r) + "]"
	if top := fresh[r.Top].Reason; top != "" {
		reason += " " + top
	}
	return policy.Evaluation{Policy: p, Result: r, Reason: reason}
}

func (e *Engine) misconfiguration(pod *corev1.Pod) scoring.Adjustment {
	uid := string(pod.UID)
	e.mu.Lock()
	a, ok := e.misconf[uid]
	e.mu.Unlock()
	if ok {
		return a
	}
	a = e.Exposure.Misconfiguration(pod)
	e.mu.Lock()
	e.misconf[uid] = a
	e.mu.Unlock()
	return a
}

func (e *Engine) podAndNamespace(ctx context.Context, key detector.PodKey) (*corev1.Pod, *corev1.Namespace, error) {
	pod := &corev1.Pod{}
	if err := e.Reader.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: key.Pod}, pod); err != nil {
		// Ingestion checked the pod; one deleted since has nothing to contain.
		return nil, nil, client.IgnoreNotFound(err)
	}
	ns := &corev1.Namespace{}
	if err := e.Reader.Get(ctx, client.ObjectKey{Name: key.Namespace}, ns); err != nil {
		return nil, nil, client.IgnoreNotFound(err)
	}
	return pod, ns, nil
}

func send(ctx context.Context, ch chan event.GenericEvent, obj client.Object) {
	select {
	case ch <- event.GenericEvent{Object: obj}:
	case <-ctx.Done():
	}
}

func (e *Engine) state(name string) *policyState {
	st := e.policies[name]
	if st == nil {
		st = &policyState{lastSignal: map[string]time.Time{}}
		e.policies[name] = st
	}
	return st
}

// Take returns and clears the pod's triggered evaluations, by policy.
func (e *Engine) Take(key detector.PodKey) map[string]policy.Evaluation {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.pending[key]
	delete(e.pending, key)
	return out
}

// Retry puts back evaluations whose decision failed, unless newer ones came.
func (e *Engine) Retry(key detector.PodKey, evals map[string]policy.Evaluation) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pending[key] == nil {
		e.pending[key] = map[string]policy.Evaluation{}
	}
	for n, ev := range evals {
		if _, newer := e.pending[key][n]; !newer {
			e.pending[key][n] = ev
		}
	}
}

// Forget drops a deleted pod.
func (e *Engine) Forget(key detector.PodKey, uid string) {
	e.Store.Forget(key)
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.evals, key)
	delete(e.pending, key)
	delete(e.misconf, uid)
}

// ForgetPolicy drops what the engine holds for a deleted policy.
func (e *Engine) ForgetPolicy(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.policies, name)
	for _, byPolicy := range e.evals {
		delete(byPolicy, name)
	}
	for _, byPolicy := range e.pending {
		delete(byPolicy, name)
	}
}

// AddPlan records a plan and a trigger for a policy's status.
func (e *Engine) AddPlan(name string, plan securityv1alpha1.Plan) {
	e.mu.Lock()
	st := e.state(name)
	st.plans = addPlan(st.plans, plan)
	if len(st.plans) > maxPlans {
		st.plans = st.plans[len(st.plans)-maxPlans:]
	}
	e.mu.Unlock()
	e.touch(name)
}

// SetTrigger records the last threshold crossing of a policy.
func (e *Engine) SetTrigger(name string, t securityv1alpha1.Trigger) {
	e.mu.Lock()
	e.state(name).lastTrigger = &t
	e.mu.Unlock()
	e.touch(name)
}

// touch asks for the policy's status to be written.
func (e *Engine) touch(name string) {
	e.mu.Lock()
	st := e.state(name)
	notify := !st.dirty
	st.dirty = true
	e.mu.Unlock()
	if notify {
		// Never block a reconciler on a full channel: the periodic resync
		// writes the status anyway.
		select {
		case e.Policies <- event.GenericEvent{Object: &securityv1alpha1.ThreatPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}}:
		default:
		}
	}
}

// Snapshot is what the engine knows for a policy's status.
type Snapshot struct {
	LastSignal  map[string]time.Time
	LastTrigger *securityv1alpha1.Trigger
	// Plans not yet written to status.
	Plans []securityv1alpha1.Plan
}

// TakeSnapshot returns and clears pending plans; Restore puts them back when
// the status write failed.
func (e *Engine) TakeSnapshot(name string) Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.state(name)
	st.dirty = false
	s := Snapshot{LastSignal: make(map[string]time.Time, len(st.lastSignal)), LastTrigger: st.lastTrigger, Plans: st.plans}
	for k, v := range st.lastSignal {
		s.LastSignal[k] = v
	}
	st.plans = nil
	return s
}

// Restore puts back plans a failed status write did not persist.
func (e *Engine) Restore(name string, plans []securityv1alpha1.Plan) {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.state(name)
	st.plans = append(plans, st.plans...)
}

// addPlan appends plan, dropping an older plan for the same pod: a hot pod
// re-planned on every signal must not push every other pod out.
func addPlan(plans []securityv1alpha1.Plan, plan securityv1alpha1.Plan) []securityv1alpha1.Plan {
	plans = slices.DeleteFunc(plans, func(p securityv1alpha1.Plan) bool {
		return p.Namespace == plan.Namespace && p.Pod == plan.Pod
	})
	return append(plans, plan)
}
