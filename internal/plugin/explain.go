package plugin

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

func newExplainCommand(o *options) *cobra.Command {
	var live liveFlags
	cmd := &cobra.Command{
		Use:   "explain POD",
		Short: "Explain a pod: which policies cover it, its latest scores and exposure, and what Bulkhead would do",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := o.client()
			if err != nil {
				return err
			}
			ns, err := o.namespace()
			if err != nil {
				return err
			}
			v := podView{managerNS: o.managerNamespace, now: time.Now()}
			if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: args[0]}, &v.pod); err != nil {
				return err
			}
			if err := c.Get(ctx, types.NamespacedName{Name: ns}, &v.ns); err != nil {
				return err
			}
			// ThreatPolicies are cluster-scoped: a namespace-bound viewer may
			// not list them, and still learns about the pod's quarantines.
			var policies securityv1alpha1.ThreatPolicyList
			switch err := c.List(ctx, &policies); {
			case apierrors.IsForbidden(err):
				v.policiesErr = err
			case err != nil:
				return err
			}
			v.policies = policies.Items
			var qs securityv1alpha1.QuarantineList
			if err := c.List(ctx, &qs, client.InNamespace(ns)); err != nil {
				return err
			}
			for _, q := range qs.Items {
				if v.targets(&q) {
					v.quarantines = append(v.quarantines, q)
				}
			}
			// A viewer may not read the manager namespace; say so rather than fail.
			v.paused, v.pausedBy, v.pauseErr = pauseState(ctx, c, o.managerNamespace)
			v.liveURL = live.url
			if live.url != "" {
				cfg, err := o.flags.ToRESTConfig()
				if err != nil {
					return err
				}
				// The recorded view is shown whatever happens here.
				v.live, v.liveErr = fetchLive(ctx, cfg, c, o.managerNamespace, live, ns, args[0])
			}
			return v.explain(o.streams.Out)
		},
	}
	cmd.Flags().StringVar(&live.url, "ingest-url", "", "Address of the manager's ingest endpoint (e.g. https://bulkhead-ingest.bulkhead-system.svc:8444 or a port-forward): read the live scores from the leader.")
	cmd.Flags().StringVar(&live.token, "ingest-token", "", "Bearer token for --ingest-url (default: the kubeconfig's or --token's; needed when the kubeconfig authenticates with a client certificate).")
	cmd.Flags().StringVar(&live.caFile, "ingest-ca-file", "", "CA bundle to verify --ingest-url with (default: ConfigMap bulkhead-ingest-ca in the manager namespace when readable, else the system roots).")
	return cmd
}

// podView is everything explain reads about one pod.
type podView struct {
	pod         corev1.Pod
	ns          corev1.Namespace
	policies    []securityv1alpha1.ThreatPolicy
	quarantines []securityv1alpha1.Quarantine
	policiesErr error
	paused      bool
	pausedBy    string
	pauseErr    error
	managerNS   string
	now         time.Time
	// live is the leader's live view (nil: not asked for, or liveErr).
	live    *detection.Explanation
	liveErr error
	liveURL string
}

// targets reports whether q contains this pod (and not an earlier pod that
// had the same name).
func (v *podView) targets(q *securityv1alpha1.Quarantine) bool {
	t := q.Status.Target
	if t != nil && slices.Contains(t.Pods, v.pod.Name) {
		return true
	}
	if kubeutil.TargetKind(q.Spec.Target) != securityv1alpha1.TargetPod || q.Spec.Target.Name != v.pod.Name {
		return false
	}
	return t == nil || t.UID == "" || t.UID == string(v.pod.UID)
}

func (v *podView) active() *securityv1alpha1.Quarantine {
	for i, q := range v.quarantines {
		if !q.IsReleased() && q.Status.Phase != securityv1alpha1.PhaseReleased && q.Status.Phase != securityv1alpha1.PhaseFailed {
			return &v.quarantines[i]
		}
	}
	return nil
}

func (v *podView) alwaysProtected() bool {
	return v.pod.Namespace == v.managerNS || slices.Contains(securityv1alpha1.AlwaysProtectedNamespaces, v.pod.Namespace)
}

// covers says whether p selects the pod, or why not.
func (v *podView) covers(p *securityv1alpha1.ThreatPolicy) (bool, string) {
	check := func(sel *metav1.LabelSelector, set map[string]string, what string) string {
		if sel == nil {
			return ""
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return fmt.Sprintf("invalid %s: %v", what, err)
		}
		if !s.Matches(labels.Set(set)) {
			return fmt.Sprintf("%s %q does not match", what, metav1.FormatLabelSelector(sel))
		}
		return ""
	}
	if why := check(p.Spec.Selector.NamespaceSelector, v.ns.Labels, "namespaceSelector"); why != "" {
		return false, why
	}
	if why := check(p.Spec.Selector.PodSelector, v.pod.Labels, "podSelector"); why != "" {
		return false, why
	}
	return true, ""
}

// observation is the latest score a policy recorded for the pod.
type observation struct {
	time      time.Time
	score     securityv1alpha1.Score
	breakdown []securityv1alpha1.ScoreComponent
	source    string
}

func (v *podView) latest(p *securityv1alpha1.ThreatPolicy) *observation {
	var best *observation
	consider := func(o observation) {
		if best == nil || o.time.After(best.time) {
			best = &o
		}
	}
	for _, pl := range p.Status.Plans {
		if pl.Namespace == v.pod.Namespace && pl.Pod == v.pod.Name {
			src := "dry-run plan"
			if pl.BlockedBy != "" {
				src += ", blocked by " + pl.BlockedBy
			}
			consider(observation{pl.Time.Time, pl.Score, pl.Breakdown, src})
		}
	}
	if t := p.Status.LastTrigger; t != nil && t.Namespace == v.pod.Namespace && t.Pod == v.pod.Name {
		consider(observation{time: t.Time.Time, score: t.Score, source: "last trigger"})
	}
	for _, q := range v.quarantines {
		if r := q.Spec.Reason; r != nil && r.Score != "" && (r.Policy == p.Name || slices.Contains(r.Policies, p.Name)) {
			var scores []securityv1alpha1.ScoreComponent
			if e := q.Status.Evidence; e != nil {
				scores = e.Scores
			}
			consider(observation{q.CreationTimestamp.Time, r.Score, scores, "quarantine " + q.Name})
		}
	}
	return best
}

// reached is the index of the highest response step score reaches, or -1.
func reached(p *securityv1alpha1.ThreatPolicy, score securityv1alpha1.Score) int {
	s, err := strconv.ParseFloat(string(score), 64)
	if err != nil {
		return -1
	}
	step := -1
	for i, r := range p.Spec.Response {
		if m, err := strconv.ParseFloat(string(r.MinScore), 64); err == nil && s >= m {
			step = i
		}
	}
	return step
}

// actionsUpTo is the union of the ladder's actions through step i: a higher
// step adds to the lower ones.
func actionsUpTo(p *securityv1alpha1.ThreatPolicy, i int) string {
	var out []string
	for _, r := range p.Spec.Response[:i+1] {
		for _, a := range r.Actions {
			if !slices.Contains(out, string(a.Type)) {
				out = append(out, string(a.Type))
			}
		}
	}
	return strings.Join(out, ", ")
}

// would says what the policy does next for this pod.
func (v *podView) would(p *securityv1alpha1.ThreatPolicy, obs *observation) string {
	if slices.Contains(p.Spec.Safeguards.ProtectedNamespaces, v.pod.Namespace) {
		return fmt.Sprintf("nothing: the policy protects namespace %s", v.pod.Namespace)
	}
	mode, paused := p.Spec.Mode, ""
	if v.paused && mode != securityv1alpha1.ModeDryRun {
		mode, paused = securityv1alpha1.ModeDryRun, " (the cluster is paused)"
	}
	if q := v.active(); q != nil {
		how := "are recorded on it as recommendations for a human"
		if mode == securityv1alpha1.ModeEnforce {
			how = "add their actions to it automatically"
		}
		return fmt.Sprintf("already contained by Quarantine %s (%s); higher steps %s%s", q.Name, orNone(string(q.Status.Phase)), how, paused)
	}
	if cd := p.Spec.Safeguards.Cooldown; cd != nil {
		for _, q := range v.quarantines {
			if r := q.Status.ReleasedAt; r != nil && v.now.Before(r.Add(cd.Duration)) {
				return fmt.Sprintf("nothing until %s: cooldown after Quarantine %s was released", r.Add(cd.Duration).UTC().Format(time.RFC3339), q.Name)
			}
		}
	}
	step := 0
	if obs != nil {
		step = max(reached(p, obs.score), 0)
	}
	sustain := max(p.Spec.Scoring.Sustain, 1)
	when := fmt.Sprintf("after %d consecutive evaluation(s) at or above %s", sustain, p.Spec.Scoring.Threshold)
	actions := actionsUpTo(p, step)
	if mode == securityv1alpha1.ModeDryRun {
		return fmt.Sprintf("%s: record a plan (%s) in status.plans and a WouldQuarantine Event; nothing is contained%s", when, actions, paused)
	}
	if limit := p.Spec.Safeguards.MaxActiveQuarantines; limit > 0 && p.Status.ActiveQuarantines >= limit {
		return fmt.Sprintf("nothing: budget exhausted (%d of %d active quarantines)", p.Status.ActiveQuarantines, limit)
	}
	if mode == securityv1alpha1.ModeRequireApproval {
		return fmt.Sprintf("%s: create an unapproved Quarantine (%s) that waits for `kubectl bulkhead approve`", when, actions)
	}
	return fmt.Sprintf("%s: create a Quarantine applying %s", when, actions)
}

func (v *podView) explain(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	pod := fmt.Sprintf("%s/%s (phase %s", v.pod.Namespace, v.pod.Name, orNone(string(v.pod.Status.Phase)))
	if v.pod.Spec.NodeName != "" {
		pod += ", node " + v.pod.Spec.NodeName
	}
	fmt.Fprintf(w, "Pod:\t%s)\n", pod)
	if ref := metav1.GetControllerOf(&v.pod); ref != nil {
		fmt.Fprintf(w, "Owner:\t%s/%s\n", ref.Kind, ref.Name)
	}
	switch {
	case v.pauseErr != nil:
		fmt.Fprintf(w, "Containment:\tunknown (%v)\n", v.pauseErr)
	case v.paused:
		fmt.Fprintf(w, "Containment:\tPAUSED cluster-wide%s: every policy acts as DryRun\n", byWhom(v.pausedBy))
	default:
		fmt.Fprintln(w, "Containment:\tactive")
	}
	if v.alwaysProtected() {
		fmt.Fprintf(w, "Protected:\tyes, namespace %s is always protected: Bulkhead never contains this pod\n", v.pod.Namespace)
	}

	v.explainLive(w)

	fmt.Fprintln(w, "\nQuarantines of this pod:")
	if len(v.quarantines) == 0 {
		fmt.Fprintln(w, "  <none>")
	}
	for _, q := range v.quarantines {
		var score string
		if q.Spec.Reason != nil {
			score = string(q.Spec.Reason.Score)
		}
		fmt.Fprintf(w, "  %s\t%s\tscore %s\tapproved %s\treleased %s\t%s old\n", q.Name, orNone(string(q.Status.Phase)),
			orNone(score), yesNo(q.IsApproved()), yesNo(q.IsReleased()), age(q.CreationTimestamp, v.now))
	}

	var covering []*securityv1alpha1.ThreatPolicy
	var notCovering []string
	for i := range v.policies {
		p := &v.policies[i]
		if ok, why := v.covers(p); ok {
			covering = append(covering, p)
		} else {
			notCovering = append(notCovering, fmt.Sprintf("  %s\t%s", p.Name, why))
		}
	}
	if v.policiesErr != nil {
		fmt.Fprintf(w, "\nPolicies covering this pod: unknown (%v)\n", v.policiesErr)
		return w.Flush()
	}
	fmt.Fprintf(w, "\nPolicies covering this pod: %d of %d\n", len(covering), len(v.policies))
	for _, p := range covering {
		v.explainPolicy(w, p)
	}
	if len(notCovering) > 0 {
		fmt.Fprintln(w, "\nNot covering:")
		for _, line := range notCovering {
			fmt.Fprintln(w, line)
		}
	}
	return w.Flush()
}

func (v *podView) explainPolicy(w io.Writer, p *securityv1alpha1.ThreatPolicy) {
	fmt.Fprintf(w, "\n%s\t(mode %s)\n", p.Name, p.Spec.Mode)
	seen := map[string]*metav1.Time{}
	for _, d := range p.Status.Detectors {
		seen[d.Name] = d.LastSignalTime
	}
	dets := make([]string, 0, len(p.Spec.Detectors))
	for _, d := range p.Spec.Detectors {
		last := "no signal yet"
		if t := seen[d.Name]; t != nil {
			last = "last signal " + age(*t, v.now) + " ago"
		}
		dets = append(dets, fmt.Sprintf("%s (weight %d, %s)", d.Name, d.Weight, last))
	}
	fmt.Fprintf(w, "  Detectors:\t%s\n", strings.Join(dets, "; "))
	var exposure []string
	if p.Spec.Scoring.Exposure.Misconfiguration {
		exposure = append(exposure, "misconfiguration")
	}
	if p.Spec.Scoring.Exposure.Vulnerabilities {
		exposure = append(exposure, "vulnerabilities")
	}
	fmt.Fprintf(w, "  Scoring:\tthreshold %s, sustain %d, exposure %s\n", p.Spec.Scoring.Threshold,
		max(p.Spec.Scoring.Sustain, 1), cmp.Or(strings.Join(exposure, " and "), "off"))
	if limit := p.Spec.Safeguards.MaxActiveQuarantines; limit > 0 {
		fmt.Fprintf(w, "  Budget:\t%d of %d active quarantines\n", p.Status.ActiveQuarantines, limit)
	}
	obs := v.latest(p)
	step := -1
	if obs == nil {
		fmt.Fprintln(w, "  Latest score:\tnone recorded for this pod")
	} else {
		step = reached(p, obs.score)
		fmt.Fprintf(w, "  Latest score:\t%s at %s (%s)\n", obs.score, obs.time.UTC().Format(time.RFC3339), obs.source)
		for _, s := range obs.breakdown {
			fmt.Fprintf(w, "  \t  %s\n", scoreLine(s))
		}
	}
	live := v.livePolicy(w, p)
	fmt.Fprintln(w, "  Ladder:\t")
	for i, r := range p.Spec.Response {
		mark := ""
		if i == step {
			mark = "  ← latest score reaches this step"
		}
		if live != nil && i < len(live.Steps) {
			if live.Steps[i].Reached {
				mark += "  ← live score reaches this step"
			} else {
				mark += fmt.Sprintf("  (live: %s to go)", live.Steps[i].Distance)
			}
		}
		fmt.Fprintf(w, "  \t≥ %s  %s%s\n", r.MinScore, actionsUpTo(p, i), mark)
	}
	// The live score is the newest: the step it reaches is what would happen.
	if live != nil {
		obs = &observation{time: v.live.Time, score: live.Score, source: "live"}
	}
	fmt.Fprintf(w, "  Would:\t%s\n", v.would(p, obs))
}

func byWhom(user string) string {
	if user == "" {
		return ""
	}
	return " by " + user
}
