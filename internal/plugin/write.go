package plugin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// patchSpec merge-patches spec fields and the actor annotation in one
// request, so the admission policy sees the change and who made it together.
func patchSpec(ctx context.Context, c client.Client, q *securityv1alpha1.Quarantine, user string, spec map[string]any) error {
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{securityv1alpha1.ActorAnnotation: user}},
		"spec":     spec,
	})
	if err != nil {
		return err
	}
	return c.Patch(ctx, q, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(FieldManager))
}

func (o *options) getQuarantine(ctx context.Context, c client.Client, name string) (*securityv1alpha1.Quarantine, error) {
	ns, err := o.namespace()
	if err != nil {
		return nil, err
	}
	q := &securityv1alpha1.Quarantine{}
	return q, c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, q)
}

func newApproveCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "approve NAME",
		Short: "Approve a quarantine waiting for a human, so containment proceeds",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := o.client()
			if err != nil {
				return err
			}
			q, err := o.getQuarantine(ctx, c, args[0])
			if err != nil {
				return err
			}
			switch {
			case q.IsReleased():
				return fmt.Errorf("quarantine %s/%s is released: there is nothing to approve", q.Namespace, q.Name)
			case q.IsApproved():
				_, err = fmt.Fprintf(o.streams.Out, "quarantine %s/%s is already approved\n", q.Namespace, q.Name)
				return err
			}
			user, err := actor(ctx, c)
			if err != nil {
				return err
			}
			if err := patchSpec(ctx, c, q, user, map[string]any{"approved": true}); err != nil {
				return err
			}
			_, err = fmt.Fprintf(o.streams.Out, "quarantine %s/%s approved by %s\n", q.Namespace, q.Name, user)
			return err
		},
	}
}

func newReleaseCommand(o *options) *cobra.Command {
	var all, allNamespaces, yes bool
	cmd := &cobra.Command{
		Use:   "release (NAME | --all [-A] [--yes])",
		Short: "Release a quarantine, undoing everything it did; --all releases every one (break-glass)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case all && len(args) > 0:
				return errors.New("give either a NAME or --all, not both")
			case !all && len(args) == 0:
				return errors.New("give the NAME of a quarantine, or --all to release every one (break-glass)")
			case allNamespaces && !all:
				return errors.New("-A only applies with --all")
			}
			ctx := cmd.Context()
			c, err := o.client()
			if err != nil {
				return err
			}
			if !all {
				return o.releaseOne(ctx, c, args[0])
			}
			return o.releaseAll(cmd, c, allNamespaces, yes)
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "Release every unreleased quarantine in the namespace (or everywhere with -A): break-glass.")
	cmd.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, "With --all, release in every namespace.")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "Do not ask for confirmation.")
	return cmd
}

func (o *options) releaseOne(ctx context.Context, c client.Client, name string) error {
	q, err := o.getQuarantine(ctx, c, name)
	if err != nil {
		return err
	}
	if q.IsReleased() {
		_, err = fmt.Fprintf(o.streams.Out, "quarantine %s/%s is already released (phase %s)\n", q.Namespace, q.Name, orNone(string(q.Status.Phase)))
		return err
	}
	user, err := actor(ctx, c)
	if err != nil {
		return err
	}
	if err := patchSpec(ctx, c, q, user, map[string]any{"released": true}); err != nil {
		return err
	}
	_, err = fmt.Fprintf(o.streams.Out, "quarantine %s/%s released by %s\n", q.Namespace, q.Name, user)
	return err
}

func (o *options) releaseAll(cmd *cobra.Command, c client.Client, allNamespaces, yes bool) error {
	ctx := cmd.Context()
	items, ns, err := o.listQuarantines(cmd, c, allNamespaces)
	if err != nil {
		return err
	}
	var open []securityv1alpha1.Quarantine
	for _, q := range items {
		if !q.IsReleased() {
			open = append(open, q)
		}
	}
	where := "in namespace " + ns
	if allNamespaces {
		where = "in all namespaces"
	}
	if len(open) == 0 {
		_, err = fmt.Fprintf(o.streams.Out, "No unreleased quarantines %s.\n", where)
		return err
	}
	if !yes {
		if err := printQuarantines(o.streams.Out, open, allNamespaces, time.Now()); err != nil {
			return err
		}
		fmt.Fprintf(o.streams.Out, "\nRelease these %d quarantines %s? Containment will be undone. [y/N]: ", len(open), where)
		answer, _ := bufio.NewReader(o.streams.In).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			return errors.New("aborted: nothing released")
		}
	}
	user, err := actor(ctx, c)
	if err != nil {
		return err
	}
	var errs []error
	for i := range open {
		q := &open[i]
		if err := patchSpec(ctx, c, q, user, map[string]any{"released": true}); err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", q.Namespace, q.Name, err))
			continue
		}
		fmt.Fprintf(o.streams.Out, "quarantine %s/%s released by %s\n", q.Namespace, q.Name, user)
	}
	return errors.Join(errs...)
}
