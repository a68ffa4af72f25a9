package detection

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/exposure"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/scoring"
)

// Vulnerability exposure reads Trivy Operator's reports.
// +kubebuilder:rbac:groups=aquasecurity.github.io,resources=vulnerabilityreports,verbs=get;list;watch

// Activity hears which policy evaluated which detector's signal, for the
// policy's status (the ThreatPolicy controller's Activity). It may wait
// while its queue is full.
type Activity interface {
	Evaluated(ctx context.Context, policyName, detectorName string, at time.Time)
}

// Evaluator is the pipeline's record → evaluate → trigger stage: it stores
// each signal and evaluates every policy that covers the pod and weighs the
// detector (one evaluation per signal), keeping each policy's streak. When a
// threshold has held for sustain evaluations the evaluation is queued in
// Triggers for a decision; the API writes happen there, off the ingest path.
type Evaluator struct {
	Store    *Store
	Reader   client.Reader
	Exposure *exposure.Assessor
	Triggers *Triggers
	Activity Activity
	// Registry, when set, names the detectors metrics are labelled with.
	Registry *Registry

	mu sync.Mutex
	// evals holds each pod's latest evaluation per policy.
	evals   map[PodKey]map[string]*policy.Evaluation
	misconf map[string]scoring.Adjustment // by pod UID: the spec is immutable enough
	// rechecks are the pending timers of streaks that wait out sustainFor:
	// a detector that sends only when its score changes sends nothing more.
	rechecks map[recheckKey]*time.Timer
}

type recheckKey struct {
	pod    PodKey
	policy string
}

// NewEvaluator returns an evaluator recording into store and queueing into triggers.
func NewEvaluator(store *Store, reader client.Reader, assessor *exposure.Assessor, triggers *Triggers, activity Activity) *Evaluator {
	return &Evaluator{
		Store: store, Reader: reader, Exposure: assessor, Triggers: triggers, Activity: activity,
		evals: map[PodKey]map[string]*policy.Evaluation{}, misconf: map[string]scoring.Adjustment{},
		rechecks: map[recheckKey]*time.Timer{},
	}
}

// Record stores signals and evaluates the policies covering their pods.
func (e *Evaluator) Record(ctx context.Context, signals []detector.Signal) error {
	var list securityv1alpha1.ThreatPolicyList
	if err := e.Reader.List(ctx, &list); err != nil {
		return fmt.Errorf("listing policies: %w", err)
	}
	policy.SortedPolicies(list.Items)
	now := time.Now()
	// Each signal is one evaluation, in order: a 1.0 between two 0.0s of
	// one pod in one batch must be evaluated as the 1.0 it was.
	for i := range signals {
		s := &signals[i]
		e.Store.Put(signals[i : i+1])
		label := e.metricLabel(s.Detector)
		metrics.Scores.WithLabelValues(label).Observe(s.Score)
		metrics.DetectorLastSignal.WithLabelValues(label).Set(float64(now.Unix()))
		if err := e.evaluate(ctx, s, list.Items, now); err != nil {
			return err
		}
	}
	return nil
}

// OtherDetectors labels the metrics of detectors the registry does not
// hold; not a DNS label, so no detector can be named so.
const OtherDetectors = "_other"

// metricLabel is the detector's name when it is registered, else
// OtherDetectors: metric labels stay as few as the registry's names.
func (e *Evaluator) metricLabel(name string) string {
	if e.Registry == nil || e.Registry.Known(name) {
		return name
	}
	return OtherDetectors
}

func (e *Evaluator) evaluate(ctx context.Context, s *detector.Signal, policies []securityv1alpha1.ThreatPolicy, now time.Time) error {
	key := PodKey{Namespace: s.Namespace, Pod: s.Pod}
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
		e.streak(key, p, &ev, now)
		if ev.Triggered() {
			e.Triggers.put(key, ev)
			triggered = true
		} else {
			e.awaitSustainFor(key, &ev)
		}
		if e.Activity != nil {
			e.Activity.Evaluated(ctx, p.Name, s.Detector, now)
		}
	}
	if triggered {
		e.Triggers.notify(ctx, key)
	}
	return nil
}

// awaitSustainFor arms one timer for a streak that has everything but
// sustainFor's time: when it is due the pod is evaluated again from the
// fresh scores, as if a signal had come.
func (e *Evaluator) awaitSustainFor(key PodKey, ev *policy.Evaluation) {
	d := ev.Policy.Spec.Scoring.SustainFor
	if d == nil || ev.Since.IsZero() || ev.Streak < policy.Sustain(ev.Policy) || ev.Result.Score < policy.Threshold(ev.Policy) {
		return
	}
	k := recheckKey{pod: key, policy: ev.Policy.Name}
	wait := ev.Since.Add(d.Duration).Sub(ev.At)
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, armed := e.rechecks[k]; armed {
		return
	}
	e.rechecks[k] = time.AfterFunc(max(wait, 0)+10*time.Millisecond, func() { e.recheck(k, ev.Since) })
}

// recheck evaluates a waiting streak again: it triggers when the fused
// score from the scores still fresh is at or above the threshold and the
// streak was not broken meanwhile (same start).
func (e *Evaluator) recheck(k recheckKey, since time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.mu.Lock()
	delete(e.rechecks, k)
	prev := e.evals[k.pod][k.policy]
	e.mu.Unlock()
	if prev == nil || !prev.Since.Equal(since) || prev.Streak == 0 {
		return
	}
	pod, _, err := e.podAndNamespace(ctx, k.pod)
	if err != nil || pod == nil {
		return
	}
	ev := e.evaluation(ctx, prev.Policy, pod, e.Store.Fresh(k.pod))
	now := time.Now()
	e.mu.Lock()
	cur := e.evals[k.pod][k.policy]
	if cur == nil || !cur.Since.Equal(since) || ev.Result.Score < policy.Threshold(prev.Policy) {
		e.mu.Unlock()
		return
	}
	ev.Streak, ev.Since, ev.At = cur.Streak, cur.Since, now
	kept := ev
	e.evals[k.pod][k.policy] = &kept
	e.mu.Unlock()
	if ev.Triggered() {
		e.Triggers.put(k.pod, ev)
		e.Triggers.notify(ctx, k.pod)
	}
}

// streak counts ev as the next evaluation of p for the pod and keeps it.
func (e *Evaluator) streak(key PodKey, p *securityv1alpha1.ThreatPolicy, ev *policy.Evaluation, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	byPolicy := e.evals[key]
	if byPolicy == nil {
		byPolicy = map[string]*policy.Evaluation{}
		e.evals[key] = byPolicy
	}
	ev.At = now
	if prev := byPolicy[p.Name]; prev != nil && prev.Streak > 0 && ev.Result.Score >= policy.Threshold(p) {
		ev.Streak, ev.Since = prev.Streak+1, prev.Since
	} else if ev.Result.Score >= policy.Threshold(p) {
		ev.Streak, ev.Since = 1, now
	}
	kept := *ev
	byPolicy[p.Name] = &kept
}

// Evaluate scores pod for p from the fresh scores now, without counting it
// as an evaluation (auto-release asks whether the score has fallen).
func (e *Evaluator) Evaluate(ctx context.Context, p *securityv1alpha1.ThreatPolicy, pod *corev1.Pod) policy.Evaluation {
	return e.evaluation(ctx, p, pod, e.Store.Fresh(PodKey{Namespace: pod.Namespace, Pod: pod.Name}))
}

func (e *Evaluator) evaluation(ctx context.Context, p *securityv1alpha1.ThreatPolicy, pod *corev1.Pod, fresh map[string]detector.Entry) policy.Evaluation {
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

func (e *Evaluator) misconfiguration(pod *corev1.Pod) scoring.Adjustment {
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

func (e *Evaluator) podAndNamespace(ctx context.Context, key PodKey) (*corev1.Pod, *corev1.Namespace, error) {
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

// Forget drops a deleted pod: its scores, evaluations and triggers.
func (e *Evaluator) Forget(key PodKey, uid string) {
	e.Store.Forget(key)
	e.Triggers.forget(key)
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.evals, key)
	delete(e.misconf, uid)
}

// ForgetPolicy drops the evaluations and triggers of a deleted policy.
func (e *Evaluator) ForgetPolicy(name string) {
	e.Triggers.forgetPolicy(name)
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, byPolicy := range e.evals {
		delete(byPolicy, name)
	}
}
