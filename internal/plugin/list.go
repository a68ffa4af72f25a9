package plugin

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

func newListCommand(o *options) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List quarantines: target, phase, score, policy, approval, age",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			items, ns, err := o.listQuarantines(cmd, c, all)
			if err != nil {
				return err
			}
			if len(items) == 0 {
				if all {
					_, err = fmt.Fprintln(o.streams.ErrOut, "No quarantines found.")
				} else {
					_, err = fmt.Fprintf(o.streams.ErrOut, "No quarantines found in namespace %s.\n", ns)
				}
				return err
			}
			return printQuarantines(o.streams.Out, items, all, time.Now())
		},
	}
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "List quarantines in every namespace.")
	return cmd
}

// listQuarantines lists in -n's namespace, or everywhere with -A, sorted by
// namespace and name.
func (o *options) listQuarantines(cmd *cobra.Command, c client.Client, all bool) ([]securityv1alpha1.Quarantine, string, error) {
	var opts []client.ListOption
	ns := ""
	if !all {
		var err error
		if ns, err = o.namespace(); err != nil {
			return nil, "", err
		}
		opts = append(opts, client.InNamespace(ns))
	}
	var list securityv1alpha1.QuarantineList
	if err := c.List(cmd.Context(), &list, opts...); err != nil {
		return nil, "", err
	}
	slices.SortFunc(list.Items, func(a, b securityv1alpha1.Quarantine) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return list.Items, ns, nil
}

func printQuarantines(out io.Writer, items []securityv1alpha1.Quarantine, withNamespace bool, now time.Time) error {
	w := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	if withNamespace {
		fmt.Fprint(w, "NAMESPACE\t")
	}
	fmt.Fprintln(w, "NAME\tTARGET\tPHASE\tSCORE\tPOLICY\tAPPROVED\tRELEASED\tAGE")
	for _, q := range items {
		if withNamespace {
			fmt.Fprintf(w, "%s\t", q.Namespace)
		}
		var score, policy string
		if r := q.Spec.Reason; r != nil {
			score, policy = string(r.Score), r.Policy
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", q.Name, targetString(q.Spec.Target),
			orNone(string(q.Status.Phase)), orNone(score), orNone(policy),
			yesNo(q.IsApproved()), yesNo(q.IsReleased()), age(q.CreationTimestamp, now))
	}
	return w.Flush()
}

func targetString(t securityv1alpha1.Target) string {
	return string(kubeutil.TargetKind(t)) + "/" + t.Name
}

func orNone(s string) string { return cmp.Or(s, "<none>") }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func age(t metav1.Time, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}
