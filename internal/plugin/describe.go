package plugin

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/evidence"
)

func newDescribeCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "describe NAME",
		Short: "Show a quarantine: its timeline, actions, evidence and conditions (also the evidence kept after it is gone)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			ns, err := o.namespace()
			if err != nil {
				return err
			}
			ctx, out := cmd.Context(), o.streams.Out
			var q securityv1alpha1.Quarantine
			err = c.Get(ctx, types.NamespacedName{Namespace: ns, Name: args[0]}, &q)
			if apierrors.IsNotFound(err) {
				// Its evidence outlives it, in the manager namespace.
				kept, ferr := evidence.Find(ctx, c, o.managerNamespace, ns, args[0])
				if ferr != nil || len(kept) == 0 {
					return err
				}
				fmt.Fprintf(out, "Quarantine %s/%s no longer exists; its evidence is kept in the manager namespace.\n", ns, args[0])
				return describeKept(out, &kept[0])
			}
			if err != nil {
				return err
			}
			if err := describe(out, &q, time.Now()); err != nil {
				return err
			}
			e := q.Status.Evidence
			if e == nil || e.SecretRef == "" {
				return nil
			}
			var sec corev1.Secret
			if err := c.Get(ctx, types.NamespacedName{Namespace: o.managerNamespace, Name: e.SecretRef}, &sec); err != nil {
				fmt.Fprintf(out, "\nFull evidence: Secret %s/%s cannot be read: %v\n", o.managerNamespace, e.SecretRef, err)
				return nil
			}
			return describeKept(out, &sec)
		},
	}
}

// describe prints one Quarantine in kubectl-describe style. Errors from the
// individual writes surface through the final Flush.
func describe(out io.Writer, q *securityv1alpha1.Quarantine, now time.Time) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	field := func(name, format string, args ...any) {
		fmt.Fprintf(w, "%s:\t"+format+"\n", append([]any{name}, args...)...)
	}
	field("Name", "%s", q.Name)
	field("Namespace", "%s", q.Namespace)
	target := targetString(q.Spec.Target)
	if t := q.Status.Target; t != nil {
		var extra []string
		for _, kv := range [][2]string{{"uid", t.UID}, {"node", t.Node}, {"owner", t.Owner}} {
			if kv[1] != "" {
				extra = append(extra, kv[0]+" "+kv[1])
			}
		}
		if len(t.Pods) > 0 {
			extra = append(extra, "pods "+strings.Join(t.Pods, ", "))
		}
		if len(extra) > 0 {
			target += " (" + strings.Join(extra, ", ") + ")"
		}
	}
	field("Target", "%s", target)
	field("Phase", "%s", orNone(string(q.Status.Phase)))
	field("Approved", "%s", yesNo(q.IsApproved()))
	field("Released", "%s", yesNo(q.IsReleased()))
	if r := q.Spec.Reason; r != nil {
		policies := r.Policy
		if len(r.Policies) > 1 {
			policies += " (contributors: " + strings.Join(r.Policies, ", ") + ")"
		}
		field("Policy", "%s", orNone(policies))
		score := orNone(string(r.Score))
		if r.Detector != "" {
			score += " (top detector " + r.Detector + ")"
		}
		field("Score", "%s", score)
		if r.Summary != "" {
			field("Summary", "%s", r.Summary)
		}
	}
	if a := q.Annotations[securityv1alpha1.ActorAnnotation]; a != "" {
		field("Last changed by", "%s", a)
	}
	field("Created", "%s (%s ago)", q.CreationTimestamp.UTC().Format(time.RFC3339), age(q.CreationTimestamp, now))
	if t := q.Status.ContainedAt; t != nil {
		field("Contained at", "%s", t.UTC().Format(time.RFC3339))
	}
	if t := q.Status.ReleasedAt; t != nil {
		field("Released at", "%s", t.UTC().Format(time.RFC3339))
	}
	if d := q.Spec.AutoReleaseAfter; d != nil {
		field("Auto-release after", "%s", d.Duration)
	}
	if d := q.Spec.ApprovalTimeout; d != nil && !q.IsApproved() {
		field("Approval timeout", "%s", d.Duration)
	}

	fmt.Fprintln(w, "\nActions:")
	statuses := map[securityv1alpha1.ActionType]securityv1alpha1.ActionStatus{}
	for _, s := range q.Status.Actions {
		statuses[s.Type] = s
	}
	fmt.Fprintln(w, "  TYPE\tSTATE\tRESOURCE\tAPPLIED\tREVERTED\tMESSAGE")
	for _, a := range q.Spec.Actions {
		s, ok := statuses[a.Type]
		state := securityv1alpha1.ActionPending
		if ok {
			state = s.State
		}
		msg := s.Message
		if s.OriginalReplicas != nil {
			msg = strings.TrimSpace(fmt.Sprintf("original replicas %d. %s", *s.OriginalReplicas, msg))
		}
		if s.Attempts > 1 {
			msg = strings.TrimSpace(fmt.Sprintf("%d attempts. %s", s.Attempts, msg))
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\t%s\n", a.Type, state, orDash(s.Resource), timeOrDash(s.AppliedAt), timeOrDash(s.RevertedAt), orDash(msg))
	}
	kernelEnforcement(w, q.Status.Actions)

	if e := q.Status.Evidence; e != nil {
		fmt.Fprintln(w, "\nEvidence:")
		fmt.Fprintf(w, "  Captured:\t%s\n", e.CapturedAt.UTC().Format(time.RFC3339))
		if e.Node != "" {
			fmt.Fprintf(w, "  Node:\t%s\n", e.Node)
		}
		if len(e.OwnerChain) > 0 {
			fmt.Fprintf(w, "  Owner chain:\t%s\n", strings.Join(e.OwnerChain, " → "))
		}
		for _, img := range e.Images {
			fmt.Fprintf(w, "  Image:\t%s %s %s\n", img.Container, img.Image, img.ImageID)
		}
		for _, s := range e.Scores {
			fmt.Fprintf(w, "  Score:\t%s\n", scoreLine(s))
		}
		if e.PodSpec != nil {
			fmt.Fprintf(w, "  Pod spec:\tcaptured in status (redacted)\n")
		}
		if e.SecretRef != "" {
			fmt.Fprintf(w, "  Full evidence:\tSecret %s (manager namespace)\n", e.SecretRef)
		}
		if e.SHA256 != "" {
			fmt.Fprintf(w, "  SHA-256:\t%s (%d bytes)\n", e.SHA256, e.SizeBytes)
		}
	}

	if len(q.Status.Recommendations) > 0 {
		fmt.Fprintln(w, "\nRecommendations (not applied automatically):")
		for _, r := range q.Status.Recommendations {
			fmt.Fprintf(w, "  %s\t%s reached %s: consider %s\n", r.Time.UTC().Format(time.RFC3339), r.Policy, r.Score, joinActions(r.Actions))
		}
	}

	fmt.Fprintln(w, "\nConditions:")
	if len(q.Status.Conditions) == 0 {
		fmt.Fprintln(w, "  <none>")
	} else {
		fmt.Fprintln(w, "  TYPE\tSTATUS\tREASON\tSINCE\tMESSAGE")
		for _, c := range q.Status.Conditions {
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", c.Type, c.Status, c.Reason, c.LastTransitionTime.UTC().Format(time.RFC3339), c.Message)
		}
	}

	fmt.Fprintln(w, "\nTimeline:")
	if len(q.Status.Audit) == 0 {
		fmt.Fprintln(w, "  <none>")
	} else {
		// The controller keeps the first 10 and the last 40: the gap sits after the 10th.
		fmt.Fprintln(w, "  TIME\tACTOR\tEVENT\tMESSAGE")
		for i, a := range q.Status.Audit {
			if i == 10 && q.Status.AuditDropped > 0 {
				fmt.Fprintf(w, "  …\t\t\t(%d entries dropped)\n", q.Status.AuditDropped)
			}
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", a.Time.UTC().Format(time.RFC3339), a.Actor, a.Event, a.Message)
		}
	}
	return w.Flush()
}

func scoreLine(s securityv1alpha1.ScoreComponent) string {
	var b strings.Builder
	b.WriteString(s.Source)
	if s.Score != "" {
		b.WriteString(" " + string(s.Score))
	}
	if s.Weight > 0 {
		fmt.Fprintf(&b, " (weight %d)", s.Weight)
	}
	if s.Delta != "" {
		b.WriteString(" moved the score " + s.Delta)
	}
	if s.Reason != "" {
		b.WriteString(": " + s.Reason)
	}
	return b.String()
}

func joinActions(as []securityv1alpha1.ActionType) string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = string(a)
	}
	return strings.Join(out, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t *metav1.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// kernelEnforcement shows what the node sensors enforce for Isolate: the
// kernel drop and whether live connections were cut, per pod and node.
func kernelEnforcement(w io.Writer, actions []securityv1alpha1.ActionStatus) {
	for _, s := range actions {
		if len(s.Kernel) == 0 {
			continue
		}
		fmt.Fprintln(w, "\nKernel enforcement (node sensor):")
		fmt.Fprintln(w, "  POD\tNODE\tDROPPING\tCONNECTIONS CUT\tREPORTED\tMESSAGE")
		for _, k := range s.Kernel {
			cut := "no"
			if k.ConnectionsCut {
				cut = fmt.Sprintf("yes (%d, %s)", k.SocketsDestroyed, orDash(k.Method))
			}
			dropping := "no"
			if k.Enforced {
				dropping = "yes"
			}
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\t%s\n", k.Pod, k.Node, dropping, cut, k.ReportedAt.UTC().Format(time.RFC3339), orDash(k.Message))
		}
	}
}
