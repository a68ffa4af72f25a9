package main

import (
	"flag"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/bulkhead-dev/bulkhead/internal/controller/threatpolicy"
)

// Detection: signal ingestion and the ThreatPolicy controller.
func init() {
	register(component{
		name:  "detection",
		flags: func(fs *flag.FlagSet) {},
		setup: func(mgr ctrl.Manager, _ *Options) error {
			return (&threatpolicy.ThreatPolicyReconciler{Client: mgr.GetClient()}).SetupWithManager(mgr)
		},
	})
}
