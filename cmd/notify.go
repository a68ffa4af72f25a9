package main

import (
	"flag"
	"fmt"

	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/bulkhead-dev/bulkhead/internal/notify"
)

// The notifications Secret is read in the manager namespace only.
// +kubebuilder:rbac:groups="",namespace=bulkhead-system,resources=secrets,verbs=get;list;watch

// notifyFlags configure phase-change notifications.
type notifyFlags struct {
	secretName string
}

func (f *notifyFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&f.secretName, "notifications-secret", "bulkhead-notifications",
		"Secret in the manager namespace with the notification sinks (keys "+notify.KeySlackWebhookURL+", "+
			notify.KeyWebhookURL+", "+notify.KeyWebhookHMACKey+", "+notify.KeyCloudEventsURL+"); reloaded when it changes.")
}

// setupNotify adds the dispatcher that sends Slack, webhook and CloudEvents
// notifications on every Quarantine phase change (its OnPhaseChange),
// configured from a Secret in the manager namespace.
func setupNotify(mgr ctrl.Manager, namespace string, f notifyFlags) (*notify.Dispatcher, error) {
	cs, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return nil, fmt.Errorf("notifications client: %w", err)
	}
	d := notify.New(cs, notify.Options{
		Namespace:  namespace,
		SecretName: f.secretName,
		Log:        ctrl.Log.WithName("notify"),
	})
	return d, mgr.Add(d)
}
