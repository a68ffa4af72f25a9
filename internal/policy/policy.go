// Package policy decides, without a cluster, what ThreatPolicies do about a
// pod whose score was evaluated: which policies cover it, whether a
// threshold held long enough, which safeguard blocks, and what one
// Quarantine for the pod must say.
package policy

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
	"github.com/bulkhead-dev/bulkhead/internal/scoring"
)

// Selects reports whether p covers pod in namespace ns.
func Selects(p *securityv1alpha1.ThreatPolicy, ns *corev1.Namespace, pod *corev1.Pod) (bool, error) {
	for _, s := range []struct {
		sel    *metav1.LabelSelector
		labels map[string]string
	}{{p.Spec.Selector.NamespaceSelector, ns.Labels}, {p.Spec.Selector.PodSelector, pod.Labels}} {
		if s.sel == nil {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(s.sel)
		if err != nil {
			return false, fmt.Errorf("policy %s selector: %w", p.Name, err)
		}
		if !sel.Matches(labels.Set(s.labels)) {
			return false, nil
		}
	}
	return true, nil
}

// Uses reports whether the policy weighs detector det.
func Uses(p *securityv1alpha1.ThreatPolicy, det string) bool {
	return slices.ContainsFunc(p.Spec.Detectors, func(d securityv1alpha1.DetectorWeight) bool { return d.Name == det })
}

// Threshold is the policy's threshold as a number (CRD validation keeps it parseable).
func Threshold(p *securityv1alpha1.ThreatPolicy) float64 {
	f, _ := scoring.ParseScore(p.Spec.Scoring.Threshold)
	return f
}

// Sustain is how many consecutive evaluations must reach the threshold.
func Sustain(p *securityv1alpha1.ThreatPolicy) int {
	return max(int(p.Spec.Scoring.Sustain), 1)
}

// Ladder returns every action of the steps score reaches, in ladder order:
// a pod that jumps straight to the top step gets the lower steps' actions too.
func Ladder(p *securityv1alpha1.ThreatPolicy, score float64) []securityv1alpha1.Action {
	var out []securityv1alpha1.Action
	for _, step := range p.Spec.Response {
		min, err := scoring.ParseScore(step.MinScore)
		if err != nil || score < min {
			continue
		}
		out = addActions(out, step.Actions)
	}
	return out
}

// Destructive reports the actions that take a workload or a node down.
func Destructive(t securityv1alpha1.ActionType) bool {
	switch t {
	case securityv1alpha1.ActionScaleToZero, securityv1alpha1.ActionCordonNode, securityv1alpha1.ActionEvict, securityv1alpha1.ActionDetach:
		return true
	}
	return false
}

// MinFreshWeight is scoring.minFreshWeight with its default, in percent.
func MinFreshWeight(p *securityv1alpha1.ThreatPolicy) int64 {
	if m := p.Spec.Scoring.MinFreshWeight; m != nil {
		return int64(*m)
	}
	return 50
}

// Corroborated reports whether r may reach destructive actions: two
// detectors are fresh, or the fresh ones carry minFreshWeight percent of
// the policy's weight; and a detector whose input a tenant can forge is
// not the only fresh one, whatever its weight.
func Corroborated(p *securityv1alpha1.ThreatPolicy, r scoring.Result) bool {
	if onlyForgeable(r) {
		return false
	}
	return r.Detectors >= 2 || (r.TotalWeight > 0 && r.FreshWeight*100 >= MinFreshWeight(p)*r.TotalWeight)
}

// Forgeable says whether a tenant can forge a detector's input about its own
// pods: Alertmanager's alerts carry the namespace and pod labels of the
// metrics they fired on, and a tenant's ServiceMonitor with honorLabels
// (or a pushed metric) chooses those labels.
func Forgeable(det string) bool { return det == detector.Alertmanager }

// onlyForgeable reports whether every fresh detector in r is Forgeable.
func onlyForgeable(r scoring.Result) bool {
	n := 0
	for _, c := range r.Breakdown {
		if c.Weight <= 0 { // exposure, not a detector
			continue
		}
		if !Forgeable(c.Source) {
			return false
		}
		n++
	}
	return n > 0
}

// Allowed drops destructive actions from a ladder's actions unless the
// score is corroborated (Corroborated).
func Allowed(p *securityv1alpha1.ThreatPolicy, r scoring.Result, actions []securityv1alpha1.Action) []securityv1alpha1.Action {
	if Corroborated(p, r) {
		return actions
	}
	return slices.DeleteFunc(slices.Clone(actions), func(a securityv1alpha1.Action) bool { return Destructive(a.Type) })
}

// addActions appends the actions whose type is not in have yet.
func addActions(have, add []securityv1alpha1.Action) []securityv1alpha1.Action {
	for _, a := range add {
		if !slices.ContainsFunc(have, func(h securityv1alpha1.Action) bool { return h.Type == a.Type }) {
			have = append(have, *a.DeepCopy())
		}
	}
	return have
}

// missing lists the types in want that have lacks.
func missing(have, want []securityv1alpha1.Action) []securityv1alpha1.ActionType {
	var out []securityv1alpha1.ActionType
	for _, a := range want {
		if !slices.ContainsFunc(have, func(h securityv1alpha1.Action) bool { return h.Type == a.Type }) {
			out = append(out, a.Type)
		}
	}
	return out
}

// Evaluation is one policy's latest view of one pod.
type Evaluation struct {
	Policy *securityv1alpha1.ThreatPolicy
	Result scoring.Result
	// Streak counts consecutive evaluations at or above the threshold.
	Streak int
	// Reason is the top detector's explanation.
	Reason string
	// Since is when the streak began and At when this evaluation was made
	// (sustainFor is measured between them).
	Since, At time.Time
}

// Triggered reports whether the threshold held for sustain evaluations
// and, when the policy sets sustainFor, for that long.
func (e *Evaluation) Triggered() bool {
	if e.Streak < Sustain(e.Policy) || e.Result.Score < Threshold(e.Policy) {
		return false
	}
	d := e.Policy.Spec.Scoring.SustainFor
	return d == nil || (!e.Since.IsZero() && e.At.Sub(e.Since) >= d.Duration)
}

// Env is the cluster state a decision depends on.
type Env struct {
	Now              time.Time
	Paused           bool
	ManagerNamespace string
	Pod              *corev1.Pod
	// Existing is the pod's unreleased Quarantine, if any.
	Existing *securityv1alpha1.Quarantine
	// LastRelease is when a Quarantine of this pod was last released.
	LastRelease time.Time
	// ActiveByPolicy counts unreleased Quarantines each policy contributes to.
	ActiveByPolicy map[string]int
	// ActiveInNamespace counts, by policy, those in the pod's namespace
	// (namespaceShare); Cordons, by policy, those carrying CordonNode
	// (maxCordonedNodes).
	ActiveInNamespace map[string]int
	Cordons           map[string]int
	// ActiveTotal counts unreleased Quarantines made by policies; MaxActive
	// caps it cluster-wide (0: no cap).
	ActiveTotal int
	MaxActive   int
	// ActiveTotalInNamespace counts those in the pod's namespace;
	// MaxActiveInNamespace caps it (the namespace's share of MaxActive; 0:
	// no cap), so one namespace cannot spend the cluster cap either.
	ActiveTotalInNamespace int
	MaxActiveInNamespace   int
	// MadeByPolicy reports whether a Quarantine is one the manager made for
	// its policies (provenance verified); nil trusts the created-by
	// annotation (tests of this package only).
	MadeByPolicy func(*securityv1alpha1.Quarantine) bool
}

// madeByPolicy applies env's provenance check.
func (env *Env) madeByPolicy(q *securityv1alpha1.Quarantine) bool {
	if env.MadeByPolicy != nil {
		return env.MadeByPolicy(q) && q.Spec.Reason != nil
	}
	return createdByPolicy(q)
}

// Supersedable reports whether a hand-made Quarantine holds nothing a
// policy must respect: unapproved, Failed or released. A policy makes its
// own Quarantine beside it, or a pod could be made immune by one.
func Supersedable(q *securityv1alpha1.Quarantine) bool {
	return !q.IsApproved() || q.IsReleased() || q.Status.Phase == securityv1alpha1.PhaseFailed || q.Status.Phase == securityv1alpha1.PhaseReleased
}

// Safeguards that block, as written in plans and events.
const (
	BlockedProtectedNamespace = "ProtectedNamespace"
	BlockedBudget             = securityv1alpha1.ReasonBudgetExhausted
	BlockedClusterCap         = "ClusterQuarantineCap"
	BlockedCooldown           = "Cooldown"
	BlockedNamespaceShare     = "NamespaceBudgetShare"
	BlockedClusterCapShare    = "ClusterCapNamespaceShare"
)

// Outcome is what the evaluations of one pod call for.
type Outcome struct {
	// Create is the spec of a new Quarantine; Update the new spec of the
	// existing one. At most one is set.
	Create, Update *securityv1alpha1.QuarantineSpec
	// HandMade says Update escalates a hand-made Quarantine: only its
	// actions may be written (the rest of its spec is its author's).
	HandMade bool
	// Recommendations are escalations for a human (outside Enforce).
	Recommendations []securityv1alpha1.Recommendation
	// Plans are containments not carried out, by policy.
	Plans map[string]securityv1alpha1.Plan
	// Triggers are the policies whose threshold held, with their score.
	Triggers map[string]float64
	// CordonCapped lists the policies whose CordonNode was left out
	// because their maxCordonedNodes is reached.
	CordonCapped []string
}

// Decide turns the triggered evaluations of one pod into an Outcome.
// Evaluations are considered in order; the first contributor of a new
// Quarantine is reason.policy.
func Decide(evals []Evaluation, env Env) Outcome {
	out := Outcome{Plans: map[string]securityv1alpha1.Plan{}, Triggers: map[string]float64{}}
	var spec *securityv1alpha1.QuarantineSpec
	if q := env.Existing; q != nil {
		switch {
		case env.madeByPolicy(q):
			spec = q.Spec.DeepCopy()
		case Supersedable(q):
			// Holds nothing: the policies make their own.
			env.Existing = nil
		default:
			out.HandMade = true
		}
	}
	if out.HandMade {
		return escalateHandMade(evals, env, out)
	}
	var created *securityv1alpha1.QuarantineSpec
	changed := false
	for i := range evals {
		e := &evals[i]
		if !e.Triggered() {
			continue
		}
		p := e.Policy
		out.Triggers[p.Name] = e.Result.Score
		actions, mode := triggered(e, env)
		if capped := cordonCapped(p, env, spec, actions); capped != nil {
			actions = capped
			out.CordonCapped = append(out.CordonCapped, p.Name)
		}
		plan := func(blockedBy string) {
			out.Plans[p.Name] = securityv1alpha1.Plan{
				Time: metav1.NewTime(env.Now), Namespace: env.Pod.Namespace, Pod: env.Pod.Name,
				Score: scoring.FormatScore(e.Result.Score), Breakdown: e.Result.Breakdown, Actions: types(actions), BlockedBy: blockedBy,
			}
		}
		contributor := spec != nil && slices.Contains(spec.Reason.Policies, p.Name)
		if block := safeguard(p, env, spec != nil, contributor, created != nil); block != "" || mode == securityv1alpha1.ModeDryRun {
			plan(block)
			continue
		}
		creating := created != nil
		if spec == nil {
			// A new Quarantine, shared by every contributor of this pass.
			spec = newSpec(p, e, actions)
			created, changed = spec, true
		} else {
			if !contributor {
				// Joining counts against this policy's budget too.
				join(spec, p, creating)
				changed = true
			}
			if add := missing(spec.Actions, actions); len(add) > 0 {
				// At creation every contributor's actions apply (any
				// RequireApproval one leaves it unapproved); later, only
				// Enforce escalates by itself.
				if creating || mode == securityv1alpha1.ModeEnforce {
					spec.Actions = addActions(spec.Actions, actions)
					changed = true
				} else {
					out.Recommendations = append(out.Recommendations, recommendation(p, e, env, add))
				}
			}
		}
		if e.Result.Score > scoreOf(spec) {
			spec.Reason.Score = scoring.FormatScore(e.Result.Score)
			spec.Reason.Detector = e.Result.Top
			spec.Reason.Summary = kubeutil.Truncate(e.Reason, 1024)
			changed = true
		}
	}
	switch {
	case created != nil:
		out.Create = created
	case changed:
		out.Update = spec
	}
	return out
}

// triggered is what a triggered evaluation calls for: the ladder's actions
// it may take, and the mode (DryRun while paused).
func triggered(e *Evaluation, env Env) ([]securityv1alpha1.Action, securityv1alpha1.PolicyMode) {
	p := e.Policy
	mode := p.Spec.Mode
	if env.Paused {
		mode = securityv1alpha1.ModeDryRun
	}
	return Allowed(p, e.Result, Ladder(p, e.Result.Score)), mode
}

// protected reports whether the pod's namespace is protected from p.
func protected(p *securityv1alpha1.ThreatPolicy, env Env) bool {
	ns := env.Pod.Namespace
	return ns == env.ManagerNamespace || slices.Contains(securityv1alpha1.AlwaysProtectedNamespaces, ns) || slices.Contains(p.Spec.Safeguards.ProtectedNamespaces, ns)
}

// escalateHandMade adds the actions the triggered policies call for to an
// approved hand-made Quarantine that lacks them (under Enforce; otherwise
// they are recommended). Its reason, approval and release stay its
// author's, and it counts against no budget.
func escalateHandMade(evals []Evaluation, env Env, out Outcome) Outcome {
	q := env.Existing
	actions := slices.Clone(q.Spec.Actions)
	for i := range evals {
		e := &evals[i]
		if !e.Triggered() {
			continue
		}
		p := e.Policy
		out.Triggers[p.Name] = e.Result.Score
		want, mode := triggered(e, env)
		ns := env.Pod.Namespace
		block := ""
		if protected(p, env) {
			block = BlockedProtectedNamespace
		}
		add := missing(actions, want)
		if len(add) == 0 {
			continue
		}
		if block != "" || mode == securityv1alpha1.ModeDryRun {
			out.Plans[p.Name] = securityv1alpha1.Plan{
				Time: metav1.NewTime(env.Now), Namespace: ns, Pod: env.Pod.Name,
				Score: scoring.FormatScore(e.Result.Score), Breakdown: e.Result.Breakdown, Actions: types(want), BlockedBy: block,
			}
			continue
		}
		if mode != securityv1alpha1.ModeEnforce {
			out.Recommendations = append(out.Recommendations, recommendation(p, e, env, add))
			continue
		}
		actions = addActions(actions, want)
	}
	if len(actions) > len(q.Spec.Actions) {
		spec := q.Spec.DeepCopy()
		spec.Actions = actions
		out.Update = spec
	}
	return out
}

// safeguard names what blocks p from containing the pod, or "".
func safeguard(p *securityv1alpha1.ThreatPolicy, env Env, exists, contributor, creating bool) string {
	if protected(p, env) {
		return BlockedProtectedNamespace
	}
	if contributor {
		return ""
	}
	if !exists && !env.LastRelease.IsZero() && p.Spec.Safeguards.Cooldown != nil && env.Now.Sub(env.LastRelease) < p.Spec.Safeguards.Cooldown.Duration {
		return BlockedCooldown
	}
	if env.ActiveByPolicy[p.Name] >= budget(p) {
		return BlockedBudget
	}
	if env.ActiveInNamespace[p.Name] >= NamespaceShare(p) {
		return BlockedNamespaceShare
	}
	if !exists && !creating && env.MaxActive > 0 && env.ActiveTotal >= env.MaxActive {
		return BlockedClusterCap
	}
	if !exists && !creating && env.MaxActiveInNamespace > 0 && env.ActiveTotalInNamespace >= env.MaxActiveInNamespace {
		return BlockedClusterCapShare
	}
	return ""
}

func budget(p *securityv1alpha1.ThreatPolicy) int {
	if p.Spec.Safeguards.MaxActiveQuarantines > 0 {
		return int(p.Spec.Safeguards.MaxActiveQuarantines)
	}
	return 10
}

// Budget is a policy's maxActiveQuarantines with its default.
func Budget(p *securityv1alpha1.ThreatPolicy) int { return budget(p) }

// NamespaceShare is how many of p's budget one namespace may hold:
// namespaceShare percent (default 50) of maxActiveQuarantines, rounded up,
// at least 1.
func NamespaceShare(p *securityv1alpha1.ThreatPolicy) int {
	share := 50
	if v := p.Spec.Safeguards.NamespaceShare; v != nil {
		share = int(*v)
	}
	return ShareOf(budget(p), share)
}

// ShareOf is percent of total, rounded up, at least 1 (0 when total is 0:
// no cap).
func ShareOf(total, percent int) int {
	if total <= 0 {
		return 0
	}
	return max(1, (total*percent+99)/100)
}

// CordonCap is p's maxCordonedNodes with its default (2).
func CordonCap(p *securityv1alpha1.ThreatPolicy) int {
	if v := p.Spec.Safeguards.MaxCordonedNodes; v != nil {
		return int(*v)
	}
	return 2
}

// HasCordon reports whether q's spec carries CordonNode.
func HasCordon(q *securityv1alpha1.Quarantine) bool {
	return slices.ContainsFunc(q.Spec.Actions, func(a securityv1alpha1.Action) bool { return a.Type == securityv1alpha1.ActionCordonNode })
}

// cordonCapped returns actions without CordonNode when p would add it and
// its cordon cap is reached; nil when nothing changes.
func cordonCapped(p *securityv1alpha1.ThreatPolicy, env Env, spec *securityv1alpha1.QuarantineSpec, actions []securityv1alpha1.Action) []securityv1alpha1.Action {
	wants := slices.ContainsFunc(actions, func(a securityv1alpha1.Action) bool { return a.Type == securityv1alpha1.ActionCordonNode })
	if !wants || env.Cordons[p.Name] < CordonCap(p) {
		return nil
	}
	if spec != nil && slices.ContainsFunc(spec.Actions, func(a securityv1alpha1.Action) bool { return a.Type == securityv1alpha1.ActionCordonNode }) {
		return nil // already cordoning: nothing new
	}
	return slices.DeleteFunc(slices.Clone(actions), func(a securityv1alpha1.Action) bool { return a.Type == securityv1alpha1.ActionCordonNode })
}

func newSpec(p *securityv1alpha1.ThreatPolicy, e *Evaluation, actions []securityv1alpha1.Action) *securityv1alpha1.QuarantineSpec {
	approved, released := true, false
	spec := &securityv1alpha1.QuarantineSpec{
		Actions:  actions,
		Approved: &approved, Released: &released,
		Reason: &securityv1alpha1.QuarantineReason{Policy: p.Name, Detector: e.Result.Top,
			Score: scoring.FormatScore(e.Result.Score), Summary: kubeutil.Truncate(e.Reason, 1024)},
	}
	join(spec, p, true)
	return spec
}

// join makes p a contributor: it is listed, the shortest autoReleaseAfter
// and the highest CordonNode floor apply, and at creation a RequireApproval
// contributor leaves it unapproved.
func join(spec *securityv1alpha1.QuarantineSpec, p *securityv1alpha1.ThreatPolicy, creating bool) {
	spec.Reason.Policies = append(spec.Reason.Policies, p.Name)
	if spec.Reason.Policy == "" {
		spec.Reason.Policy = p.Name
	}
	// The Quarantine controller reads the floor from the Quarantine, never
	// from the policies (which may change or go away).
	if m := p.Spec.Safeguards.MinSchedulableNodes; m != nil {
		if spec.Safeguards == nil {
			spec.Safeguards = &securityv1alpha1.QuarantineSafeguards{}
		}
		if cur := spec.Safeguards.MinSchedulableNodes; cur == nil || *m > *cur {
			v := *m
			spec.Safeguards.MinSchedulableNodes = &v
		}
	}
	if d := p.Spec.Release.AutoReleaseAfter; d != nil && (spec.AutoReleaseAfter == nil || d.Duration < spec.AutoReleaseAfter.Duration) {
		spec.AutoReleaseAfter = d.DeepCopy()
	}
	if creating && p.Spec.Mode == securityv1alpha1.ModeRequireApproval {
		f := false
		spec.Approved = &f
		if d := p.Spec.Release.ApprovalTimeout; d != nil && (spec.ApprovalTimeout == nil || d.Duration < spec.ApprovalTimeout.Duration) {
			spec.ApprovalTimeout = d.DeepCopy()
		}
	}
}

func recommendation(p *securityv1alpha1.ThreatPolicy, e *Evaluation, env Env, add []securityv1alpha1.ActionType) securityv1alpha1.Recommendation {
	return securityv1alpha1.Recommendation{Time: metav1.NewTime(env.Now), Policy: p.Name, Score: scoring.FormatScore(e.Result.Score), Actions: add}
}

func createdByPolicy(q *securityv1alpha1.Quarantine) bool {
	return q.Annotations[securityv1alpha1.CreatedByPolicyAnnotation] != "" && q.Spec.Reason != nil
}

func scoreOf(spec *securityv1alpha1.QuarantineSpec) float64 {
	f, _ := scoring.ParseScore(spec.Reason.Score)
	return f
}

func types(actions []securityv1alpha1.Action) []securityv1alpha1.ActionType {
	out := make([]securityv1alpha1.ActionType, len(actions))
	for i, a := range actions {
		out[i] = a.Type
	}
	return out
}

// MaxNameLength bounds Quarantine names.
const MaxNameLength = 63

// Name is the Quarantine name for pod: the pod's name cut to 63 characters,
// then -2, -3, ... until taken reports a free one.
func Name(pod string, taken func(string) bool) string {
	base := trimName(pod, MaxNameLength)
	if !taken(base) {
		return base
	}
	for i := 2; ; i++ {
		suffix := "-" + strconv.Itoa(i)
		if n := trimName(pod, MaxNameLength-len(suffix)) + suffix; !taken(n) {
			return n
		}
	}
}

// trimName cuts s to n characters without leaving a trailing '-' or '.'.
func trimName(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	for len(s) > 1 && (s[len(s)-1] == '-' || s[len(s)-1] == '.') {
		s = s[:len(s)-1]
	}
	return s
}

// SortedPolicies orders policies by name, so decisions are deterministic.
func SortedPolicies(ps []securityv1alpha1.ThreatPolicy) {
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
}

// AutoReleaseAtAnnotation holds when an extended auto-release is next due.
const AutoReleaseAtAnnotation = "security.bulkhead.dev/auto-release-at"

// AutoReleaseActor is the audit actor of an automatic release.
const AutoReleaseActor = "bulkhead/auto-release"

// AutoReleaseAfter is how long after creation q's auto-release is first
// due: the longer of q's spec and the shortest of its contributing
// policies' (what the manager stamped), so a shortened spec cannot hasten
// it. ok is false when none applies (nil policy: gone; a policy without
// autoReleaseAfter holds the Quarantine).
func AutoReleaseAfter(q *securityv1alpha1.Quarantine, policies []*securityv1alpha1.ThreatPolicy) (time.Duration, bool) {
	if q.Spec.AutoReleaseAfter == nil || len(policies) == 0 {
		return 0, false
	}
	var shortest time.Duration
	for i, p := range policies {
		if p == nil || p.Spec.Release.AutoReleaseAfter == nil {
			return 0, false
		}
		if d := p.Spec.Release.AutoReleaseAfter.Duration; i == 0 || d < shortest {
			shortest = d
		}
	}
	return max(shortest, q.Spec.AutoReleaseAfter.Duration), true
}

// AutoReleaseDue is when q's automatic release is due; ok is false when it
// has none (no autoReleaseAfter, released, not a policy's Quarantine, or a
// contributing policy that no longer auto-releases). The auto-release-at
// annotation (the manager's extension) can only postpone it.
func AutoReleaseDue(q *securityv1alpha1.Quarantine, policies []*securityv1alpha1.ThreatPolicy) (time.Time, bool) {
	if q.IsReleased() || !createdByPolicy(q) {
		return time.Time{}, false
	}
	after, ok := AutoReleaseAfter(q, policies)
	if !ok {
		return time.Time{}, false
	}
	due := q.CreationTimestamp.Add(after)
	if at, err := time.Parse(time.RFC3339, q.Annotations[AutoReleaseAtAnnotation]); err == nil && at.After(due) {
		due = at
	}
	return due, true
}

// ReleaseVerdict is what the evaluations say once auto-release is due.
type ReleaseVerdict string

const (
	// VerdictFell: positive evidence, the score fell below every threshold.
	VerdictFell ReleaseVerdict = "ScoreFell"
	// VerdictHigh: a contributing policy still scores at or above its threshold.
	VerdictHigh ReleaseVerdict = "ScoreStillHigh"
	// VerdictNoEvidence: nothing says the score fell (no fresh score from
	// the detector that triggered, or nothing left to score).
	VerdictNoEvidence ReleaseVerdict = "NoEvidence"
)

// JudgeRelease weighs the evaluations of the contributing policies (for a
// gone pod: of every pod of its workload). trigger is the detector that
// triggered (reason.detector). The score fell only when every evaluation
// has a fresh score, from trigger among others when the policy weighs it,
// and is below its threshold; "no fresh score" is not "fell".
func JudgeRelease(evals []Evaluation, trigger string) ReleaseVerdict {
	if len(evals) == 0 {
		return VerdictNoEvidence
	}
	verdict := VerdictFell
	for i := range evals {
		e := &evals[i]
		if e.Result.Score >= Threshold(e.Policy) {
			return VerdictHigh
		}
		fresh := e.Result.Detectors > 0
		if fresh && trigger != "" && Uses(e.Policy, trigger) {
			fresh = slices.ContainsFunc(e.Result.Breakdown, func(c securityv1alpha1.ScoreComponent) bool { return c.Source == trigger })
		}
		if !fresh {
			verdict = VerdictNoEvidence
		}
	}
	return verdict
}

// ReleaseWithoutEvidenceDue reports whether every contributing policy's
// fallback (release.releaseWithoutEvidenceAfter) has passed since q was
// created. A policy without one holds q.
func ReleaseWithoutEvidenceDue(q *securityv1alpha1.Quarantine, policies []*securityv1alpha1.ThreatPolicy, now time.Time) bool {
	if len(policies) == 0 {
		return false
	}
	for _, p := range policies {
		if p == nil || p.Spec.Release.ReleaseWithoutEvidenceAfter == nil ||
			now.Before(q.CreationTimestamp.Add(p.Spec.Release.ReleaseWithoutEvidenceAfter.Duration)) {
			return false
		}
	}
	return true
}
func FallenBelow(evals []Evaluation) bool {
	for i := range evals {
		if evals[i].Result.Score >= Threshold(evals[i].Policy) {
			return false
		}
	}
	return true
}

// ProtectingPolicy names the first policy (by name) whose
// safeguards.protectedNamespaces lists ns, or "". Hand-made Quarantines
// are refused there too: a policy's protection is not only its own
// restraint.
func ProtectingPolicy(policies []securityv1alpha1.ThreatPolicy, ns string) string {
	by := ""
	for i := range policies {
		p := &policies[i]
		if slices.Contains(p.Spec.Safeguards.ProtectedNamespaces, ns) && (by == "" || p.Name < by) {
			by = p.Name
		}
	}
	return by
}
