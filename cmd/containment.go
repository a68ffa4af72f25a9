package main

import (
	"flag"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/bulkhead-dev/bulkhead/internal/controller/quarantine"
)

// Containment: the Quarantine controller.
func init() {
	register(component{
		name:  "containment",
		flags: func(fs *flag.FlagSet) {},
		setup: func(mgr ctrl.Manager, _ *Options) error {
			return (&quarantine.QuarantineReconciler{Client: mgr.GetClient()}).SetupWithManager(mgr)
		},
	})
}
