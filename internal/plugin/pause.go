package plugin

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func newPauseCommand(o *options, pause bool) *cobra.Command {
	use, short := "resume", "Resume containment after a pause"
	if pause {
		use, short = "pause", "Pause containment cluster-wide: every ThreatPolicy acts as DryRun until resume"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := o.client()
			if err != nil {
				return err
			}
			paused, by, err := pauseState(ctx, c, o.managerNamespace)
			if err != nil {
				return err
			}
			if paused == pause {
				state := "not paused"
				if paused {
					state = "already paused"
					if by != "" {
						state += " (by " + by + ")"
					}
				}
				_, err = fmt.Fprintf(o.streams.Out, "Bulkhead is %s.\n", state)
				return err
			}
			user, err := actor(ctx, c)
			if err != nil {
				return err
			}
			// Server-side apply creates the ConfigMap if needed and patches
			// only the key and annotation this plugin owns.
			cm := corev1ac.ConfigMap(securityv1alpha1.ControlConfigMap, o.managerNamespace).
				WithLabels(map[string]string{securityv1alpha1.ManagedByLabel: securityv1alpha1.ManagedByValue}).
				WithAnnotations(map[string]string{securityv1alpha1.ActorAnnotation: user}).
				WithData(map[string]string{securityv1alpha1.PausedKey: fmt.Sprint(pause)})
			if err := c.Apply(ctx, cm, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
				return err
			}
			if pause {
				_, err = fmt.Fprintf(o.streams.Out, "Bulkhead paused by %s: every ThreatPolicy acts as DryRun (plans only) until `kubectl bulkhead resume`.\n", user)
			} else {
				_, err = fmt.Fprintf(o.streams.Out, "Bulkhead resumed by %s: ThreatPolicies act in their own modes again.\n", user)
			}
			return err
		},
	}
}

// pauseState reads the switch; a missing ConfigMap means not paused.
func pauseState(ctx context.Context, c client.Client, ns string) (paused bool, by string, err error) {
	var cm corev1.ConfigMap
	err = c.Get(ctx, types.NamespacedName{Namespace: ns, Name: securityv1alpha1.ControlConfigMap}, &cm)
	if apierrors.IsNotFound(err) {
		return false, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("reading the pause switch ConfigMap %s/%s: %w", ns, securityv1alpha1.ControlConfigMap, err)
	}
	return cm.Data[securityv1alpha1.PausedKey] == "true", cm.Annotations[securityv1alpha1.ActorAnnotation], nil
}
