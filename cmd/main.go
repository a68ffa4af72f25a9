// Command bulkhead is the Bulkhead manager; `bulkhead eval` evaluates the
// behavior model offline.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/podcache"
)

var (
	scheme   = runtime.NewScheme()
	setupLog = ctrl.Log.WithName("setup")
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(securityv1alpha1.AddToScheme(scheme))
}

// Options shared by every component of the manager.
type Options struct {
	ManagerNamespace string
	// Behavior is the built-in behavior model, set by the behavior component
	// (behavior.go sorts, and so initialises, before detection.go) and fed by
	// signal ingestion. Nil when the model is disabled.
	Behavior detector.BehaviorObserver
}

// component is one area of the manager (containment, detection, ...). Each
// lives in its own file in this package and registers itself from init, so
// the areas can grow without editing main.
type component struct {
	name  string
	flags func(fs *flag.FlagSet)
	setup func(mgr ctrl.Manager, opts *Options) error
}

var components []component

func register(c component) { components = append(components, c) }

// subcommands other than the manager, such as eval.
var subcommands = map[string]func(args []string) error{}

func main() {
	if len(os.Args) > 1 {
		if run, ok := subcommands[os.Args[1]]; ok {
			if err := run(os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "bulkhead %s: %v\n", os.Args[1], err)
				os.Exit(1)
			}
			return
		}
	}
	if err := runManager(os.Args[1:]); err != nil {
		setupLog.Error(err, "manager exited")
		os.Exit(1)
	}
}

func runManager(args []string) error {
	var (
		metricsAddr          string
		probeAddr            string
		secureMetrics        bool
		enableHTTP2          bool
		enableLeaderElection bool
		leaseDuration        time.Duration
		renewDeadline        time.Duration
		retryPeriod          time.Duration
		qps                  float64
		burst                int
		opts                 Options
	)
	fs := flag.NewFlagSet("bulkhead", flag.ContinueOnError)
	fs.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "Address the metrics endpoint binds to (HTTPS, authenticated); 0 disables it.")
	fs.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the health and readiness probes bind to.")
	fs.BoolVar(&secureMetrics, "metrics-secure", true, "Serve metrics over HTTPS behind Kubernetes authentication and authorization.")
	fs.BoolVar(&enableHTTP2, "enable-http2", false, "Enable HTTP/2 on the metrics server (off: HTTP/2 rapid-reset CVEs).")
	fs.BoolVar(&enableLeaderElection, "leader-elect", false, "Enable leader election so only one replica acts.")
	fs.DurationVar(&leaseDuration, "leader-elect-lease-duration", 15*time.Second, "Leader election lease duration.")
	fs.DurationVar(&renewDeadline, "leader-elect-renew-deadline", 10*time.Second, "Leader election renew deadline.")
	fs.DurationVar(&retryPeriod, "leader-elect-retry-period", 2*time.Second, "Leader election retry period.")
	fs.Float64Var(&qps, "kube-api-qps", 500, "Client QPS to the API server, per resource type; containment runs in parallel, so keep this well above client-go's default of 5 (the API server's priority and fairness still protects it).")
	fs.IntVar(&burst, "kube-api-burst", 1000, "Client burst to the API server, per resource type.")
	fs.StringVar(&opts.ManagerNamespace, "manager-namespace", securityv1alpha1.DefaultManagerNamespace, "Namespace the manager runs in; always protected; holds baselines and switches.")
	for _, c := range components {
		if c.flags != nil {
			c.flags(fs)
		}
	}
	zapOpts := zap.Options{Development: false}
	zapOpts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	var tlsOpts []func(*tls.Config)
	if !enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{
		BindAddress:   metricsAddr,
		SecureServing: secureMetrics,
		TLSOpts:       tlsOpts,
	}
	if secureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	restCfg := ctrl.GetConfigOrDie()
	restCfg.QPS = float32(qps)
	restCfg.Burst = burst

	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme: scheme,
		// Nothing reads managedFields from the cache; cached Pods keep only
		// what the manager's readers use (see internal/podcache).
		Cache:                   podcache.CacheOptions(),
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          enableLeaderElection,
		LeaderElectionID:        "bulkhead.security.bulkhead.dev",
		LeaderElectionNamespace: opts.ManagerNamespace,
		LeaseDuration:           &leaseDuration,
		RenewDeadline:           &renewDeadline,
		RetryPeriod:             &retryPeriod,
		// Release the lease on clean shutdown so a successor takes over at once.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	for _, c := range components {
		if err := c.setup(mgr, &opts); err != nil {
			return fmt.Errorf("setting up %s: %w", c.name, err)
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("adding health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("adding ready check: %w", err)
	}
	setupLog.Info("starting manager", "namespace", opts.ManagerNamespace)
	return mgr.Start(ctrl.SetupSignalHandler())
}
