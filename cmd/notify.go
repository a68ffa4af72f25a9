package main

import (
	"flag"
	"fmt"

	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/bulkhead-dev/bulkhead/internal/notify"
)

// notifier sends Slack, webhook and CloudEvents notifications on every
// Quarantine phase change. It is nil until the notifications component is
// set up; Dispatcher.OnPhaseChange is nil-safe, so wire it with a closure
// that reads this variable at call time.
var notifier *notify.Dispatcher

// The notifications Secret is read in the manager namespace only.
// +kubebuilder:rbac:groups="",namespace=bulkhead-system,resources=secrets,verbs=get;list;watch

// Notifications: phase-change notifications configured from a Secret in the
// manager namespace.
func init() {
	var secretName string
	register(component{
		name: "notifications",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&secretName, "notifications-secret", "bulkhead-notifications",
				"Secret in the manager namespace with the notification sinks (keys "+notify.KeySlackWebhookURL+", "+
					notify.KeyWebhookURL+", "+notify.KeyWebhookHMACKey+", "+notify.KeyCloudEventsURL+"); reloaded when it changes.")
		},
		setup: func(mgr ctrl.Manager, opts *Options) error {
			cs, err := kubernetes.NewForConfig(mgr.GetConfig())
			if err != nil {
				return fmt.Errorf("notifications client: %w", err)
			}
			d := notify.New(cs, notify.Options{
				Namespace:  opts.ManagerNamespace,
				SecretName: secretName,
				Log:        ctrl.Log.WithName("notify"),
			})
			if err := mgr.Add(d); err != nil {
				return err
			}
			notifier = d
			return nil
		},
	})
}
