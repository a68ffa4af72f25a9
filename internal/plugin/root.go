// Package plugin implements kubectl-bulkhead: list, describe, approve and
// release Quarantines, explain what Bulkhead would do to a pod, and flip the
// cluster-wide pause switch. Every write is a patch that records the caller
// in the actor annotation, which the shipped admission policy checks.
package plugin

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// FieldManager names the plugin in managedFields.
const FieldManager = "kubectl-bulkhead"

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(securityv1alpha1.AddToScheme(scheme))
}

// options are shared by every subcommand.
type options struct {
	flags            *genericclioptions.ConfigFlags
	streams          genericiooptions.IOStreams
	managerNamespace string
}

// NewCommand returns the root kubectl-bulkhead command with the standard
// kubectl flags (--kubeconfig, --context, -n, ...).
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &options{flags: genericclioptions.NewConfigFlags(true), streams: streams}
	root := &cobra.Command{
		Use:           "kubectl-bulkhead",
		Short:         "Inspect and operate Bulkhead quarantines",
		SilenceUsage:  true,
		SilenceErrors: false,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl bulkhead"},
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	o.flags.AddFlags(root.PersistentFlags())
	root.PersistentFlags().StringVar(&o.managerNamespace, "manager-namespace", securityv1alpha1.DefaultManagerNamespace,
		"Namespace Bulkhead's manager runs in (holds the "+securityv1alpha1.ControlConfigMap+" ConfigMap).")
	root.AddCommand(
		newListCommand(o), newDescribeCommand(o), newApproveCommand(o), newReleaseCommand(o),
		newExplainCommand(o), newPauseCommand(o, true), newPauseCommand(o, false),
	)
	return root
}

func (o *options) client() (client.Client, error) {
	cfg, err := o.flags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: scheme})
}

// namespace is -n, or the kubeconfig context's namespace, or "default".
func (o *options) namespace() (string, error) {
	ns, _, err := o.flags.ToRawKubeConfigLoader().Namespace()
	return ns, err
}

// actor is the authenticated user as the API server sees it, so the actor
// annotation matches what the admission policy compares it with.
func actor(ctx context.Context, c client.Client) (string, error) {
	ssr := &authenticationv1.SelfSubjectReview{}
	if err := c.Create(ctx, ssr); err != nil {
		return "", fmt.Errorf("finding the current user (SelfSubjectReview): %w", err)
	}
	if ssr.Status.UserInfo.Username == "" {
		return "", fmt.Errorf("the API server returned no user name")
	}
	return ssr.Status.UserInfo.Username, nil
}
