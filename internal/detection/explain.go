package detection

import (
	"context"
	"errors"
	"sort"
	"time"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/scoring"
)

// Explanation is the leader's live view of one pod's scores, which only
// its memory holds: what `kubectl bulkhead explain` shows as live. Scores
// are the API's decimal strings.
type Explanation struct {
	Namespace string    `json:"namespace"`
	Pod       string    `json:"pod"`
	Time      time.Time `json:"time"`
	// ScoreTTL is how long a score stays fresh (--score-ttl).
	ScoreTTL string `json:"scoreTTL"`
	// Detectors are the pod's fresh scores, by name.
	Detectors []DetectorScore `json:"detectors"`
	// Policies are the ThreatPolicies covering the pod, in evaluation order.
	Policies []PolicyScore `json:"policies"`
}

// DetectorScore is one detector's fresh score of the pod.
type DetectorScore struct {
	Name   string                 `json:"name"`
	Score  securityv1alpha1.Score `json:"score"`
	Time   time.Time              `json:"time"`
	Age    string                 `json:"age"`
	Reason string                 `json:"reason,omitempty"`
}

// PolicyScore is one policy's live view: the score fused now from the
// fresh scores, the streak as of its last evaluation, and how far the
// score is from each step of its ladder.
type PolicyScore struct {
	Name      string                            `json:"name"`
	Mode      securityv1alpha1.PolicyMode       `json:"mode"`
	Score     securityv1alpha1.Score            `json:"score"`
	Breakdown []securityv1alpha1.ScoreComponent `json:"breakdown,omitempty"`
	Threshold securityv1alpha1.Score            `json:"threshold"`
	// Corroborated says whether destructive steps may be reached
	// (minFreshWeight, or two fresh detectors).
	Corroborated bool `json:"corroborated"`
	// Streak counts consecutive evaluations at or above the threshold, as
	// of LastEvaluated (a streak changes only when a signal is evaluated).
	Streak        int        `json:"streak"`
	Sustain       int        `json:"sustain"`
	LastEvaluated *time.Time `json:"lastEvaluated,omitempty"`
	StreakSince   *time.Time `json:"streakSince,omitempty"`
	// SustainFor and HeldFor, when the policy sets sustainFor: how long
	// the threshold must hold and how long it has, up to now.
	SustainFor string `json:"sustainFor,omitempty"`
	HeldFor    string `json:"heldFor,omitempty"`
	// Triggered says whether the last evaluation reached the trigger.
	Triggered bool   `json:"triggered"`
	Steps     []Step `json:"steps"`
}

// Step is one rung of a policy's response ladder.
type Step struct {
	MinScore securityv1alpha1.Score        `json:"minScore"`
	Actions  []securityv1alpha1.ActionType `json:"actions"`
	Reached  bool                          `json:"reached"`
	// Distance is how far the live score must still rise ("0" once reached).
	Distance securityv1alpha1.Score `json:"distance"`
}

// PolicyState is what the builder needs of one covering policy: the
// evaluation made now and the last one counted (nil: none yet).
type PolicyState struct {
	Live policy.Evaluation
	Last *policy.Evaluation
}

// BuildExplanation assembles the live view of key from its fresh scores
// and its covering policies' evaluations; it reads nothing else.
func BuildExplanation(key PodKey, now time.Time, ttl time.Duration, fresh map[string]detector.Entry, policies []PolicyState) Explanation {
	x := Explanation{Namespace: key.Namespace, Pod: key.Pod, Time: now, ScoreTTL: ttl.String(),
		Detectors: []DetectorScore{}, Policies: []PolicyScore{}}
	for name, e := range fresh {
		x.Detectors = append(x.Detectors, DetectorScore{Name: name, Score: scoring.FormatScore(e.Score), Time: e.Time,
			Age: now.Sub(e.Time).Round(time.Second).String(), Reason: e.Reason})
	}
	sort.Slice(x.Detectors, func(i, j int) bool { return x.Detectors[i].Name < x.Detectors[j].Name })
	for _, st := range policies {
		x.Policies = append(x.Policies, policyScore(now, st))
	}
	return x
}

func policyScore(now time.Time, st PolicyState) PolicyScore {
	p, r := st.Live.Policy, st.Live.Result
	ps := PolicyScore{Name: p.Name, Mode: p.Spec.Mode, Score: scoring.FormatScore(r.Score), Breakdown: r.Breakdown,
		Threshold: scoring.FormatScore(policy.Threshold(p)), Corroborated: policy.Corroborated(p, r),
		Sustain: policy.Sustain(p), Steps: []Step{}}
	if last := st.Last; last != nil {
		ps.Streak, ps.Triggered = last.Streak, last.Triggered()
		if !last.At.IsZero() {
			ps.LastEvaluated = &last.At
		}
		if last.Streak > 0 && !last.Since.IsZero() {
			ps.StreakSince = &last.Since
		}
	}
	if d := p.Spec.Scoring.SustainFor; d != nil {
		ps.SustainFor = d.Duration.String()
		held := time.Duration(0)
		if ps.StreakSince != nil {
			held = now.Sub(*ps.StreakSince).Round(time.Second)
		}
		ps.HeldFor = held.String()
	}
	// The displayed score is rounded down, so compare what is shown: a step
	// is reached exactly when the shown score is at least its minScore.
	shown, _ := scoring.ParseScore(ps.Score)
	for _, step := range p.Spec.Response {
		s := Step{MinScore: step.MinScore, Actions: []securityv1alpha1.ActionType{}}
		for _, a := range step.Actions {
			s.Actions = append(s.Actions, a.Type)
		}
		min, err := scoring.ParseScore(step.MinScore)
		if err == nil {
			s.Reached = shown >= min
			s.Distance = scoring.FormatScore(max(min-shown, 0))
		}
		ps.Steps = append(ps.Steps, s)
	}
	return ps
}

// ErrNoPod is an explanation asked for a pod the manager does not see.
var ErrNoPod = errors.New("no such pod")

// Explain returns the live view of a pod: its fresh scores and, for every
// policy covering it, the score fused now, the streak and the ladder.
// Nothing is counted as an evaluation.
func (e *Evaluator) Explain(ctx context.Context, key PodKey) (*Explanation, error) {
	pod, ns, err := e.podAndNamespace(ctx, key)
	if err != nil {
		return nil, err
	}
	if pod == nil {
		return nil, ErrNoPod
	}
	var list securityv1alpha1.ThreatPolicyList
	if err := e.Reader.List(ctx, &list); err != nil {
		return nil, err
	}
	policy.SortedPolicies(list.Items)
	fresh := e.Store.Fresh(key)
	var states []PolicyState
	for i := range list.Items {
		p := &list.Items[i]
		if ok, err := policy.Selects(p, ns, pod); err != nil || !ok {
			continue
		}
		states = append(states, PolicyState{Live: e.evaluation(ctx, p, pod, fresh), Last: e.lastEvaluation(key, p.Name)})
	}
	x := BuildExplanation(key, time.Now(), e.Store.TTL(), fresh, states)
	return &x, nil
}

// lastEvaluation is a copy of the last evaluation of policy name counted
// for the pod, or nil.
func (e *Evaluator) lastEvaluation(key PodKey, name string) *policy.Evaluation {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ev := e.evals[key][name]; ev != nil {
		c := *ev
		return &c
	}
	return nil
}
