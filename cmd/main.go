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
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/controller/quarantine"
	"github.com/bulkhead-dev/bulkhead/internal/controller/threatpolicy"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
	"github.com/bulkhead-dev/bulkhead/internal/podcache"
)

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(securityv1alpha1.AddToScheme(s))
	return s
}

func main() {
	// Subcommands other than the manager.
	subcommands := map[string]func(args []string) error{
		"eval":   runEval,
		"sensor": runSensor,
	}
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
		ctrl.Log.WithName("setup").Error(err, "manager exited")
		os.Exit(1)
	}
}

// managerFlags configure the manager itself.
type managerFlags struct {
	namespace            string
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
	pprofAddr            string
	maxInFlight          int
}

func (f *managerFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8443", "Address the metrics endpoint binds to (HTTPS, authenticated); 0 disables it.")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "Address the health and readiness probes bind to.")
	fs.BoolVar(&f.secureMetrics, "metrics-secure", true, "Serve metrics over HTTPS behind Kubernetes authentication and authorization.")
	fs.BoolVar(&f.enableHTTP2, "enable-http2", false, "Enable HTTP/2 on the metrics server (off: HTTP/2 rapid-reset CVEs).")
	fs.BoolVar(&f.enableLeaderElection, "leader-elect", false, "Enable leader election so only one replica acts.")
	fs.DurationVar(&f.leaseDuration, "leader-elect-lease-duration", 15*time.Second, "Leader election lease duration.")
	fs.DurationVar(&f.renewDeadline, "leader-elect-renew-deadline", 10*time.Second, "Leader election renew deadline.")
	fs.DurationVar(&f.retryPeriod, "leader-elect-retry-period", 2*time.Second, "Leader election retry period.")
	fs.IntVar(&f.maxInFlight, "kube-api-max-in-flight", kubeutil.DefaultMaxInFlight, "Requests to the API server other than watches in flight at once; more wait in the manager instead of opening a connection each (kube-apiserver allows 100 streams per HTTP/2 connection). 0: no limit.")
	fs.Float64Var(&f.qps, "kube-api-qps", 500, "Client QPS to the API server, per resource type; containment runs in parallel, so keep this well above client-go's default of 5 (the API server's priority and fairness still protects it).")
	fs.IntVar(&f.burst, "kube-api-burst", 1000, "Client burst to the API server, per resource type.")
	fs.StringVar(&f.pprofAddr, "pprof-bind-address", "", "Address a pprof endpoint binds to (profiling, e.g. make bench with BENCH_PPROF); empty disables it.")
	fs.StringVar(&f.namespace, "manager-namespace", securityv1alpha1.DefaultManagerNamespace, "Namespace the manager runs in; always protected; holds baselines and switches.")
}

// flags are every component's flags.
type flags struct {
	manager     managerFlags
	behavior    behaviorFlags
	detection   detectionFlags
	policies    policyFlags
	notify      notifyFlags
	containment containmentFlags
	sensor      sensorFlags
}

func (f *flags) bind(fs *flag.FlagSet) {
	f.manager.bind(fs)
	f.behavior.bind(fs)
	f.detection.bind(fs)
	f.policies.bind(fs)
	f.notify.bind(fs)
	f.containment.bind(fs)
	f.sensor.bind(fs)
}

// runManager parses the flags of every component, builds the manager and
// wires the components in data-path order: behavior model → detection →
// per-pod decision and policy status → notifications → containment.
func runManager(args []string) error {
	var f flags
	fs := flag.NewFlagSet("bulkhead", flag.ContinueOnError)
	f.bind(fs)
	zapOpts := zap.Options{Development: false}
	zapOpts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The manager takes no positional arguments: "bulkhead frobnicate --help"
	// is a mistyped subcommand, not a request to start a manager.
	if fs.NArg() > 0 {
		return fmt.Errorf("unknown subcommand or argument %q (subcommands: eval, sensor; the manager takes flags only, see --help)", fs.Arg(0))
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	mgr, err := newManager(f.manager)
	if err != nil {
		return err
	}
	ns := f.manager.namespace
	obs, err := setupBehavior(mgr, ns, f.behavior)
	if err != nil {
		return fmt.Errorf("setting up behavior: %w", err)
	}
	activity := threatpolicy.NewActivity()
	det, err := setupDetection(mgr, ns, f.detection, obs, activity)
	if err != nil {
		return fmt.Errorf("setting up detection: %w", err)
	}
	// Notifications before the policies: their notices (BudgetExhausted,
	// AutoReleaseExtended) are sent through it.
	n, err := setupNotify(mgr, ns, f.notify)
	if err != nil {
		return fmt.Errorf("setting up notifications: %w", err)
	}
	// The policies hand each Quarantine they create straight to
	// containment, ahead of its watch (issue 17).
	handoff := quarantine.NewHandoff()
	if err := setupPolicies(mgr, ns, f.policies, det, activity, n, handoff); err != nil {
		return fmt.Errorf("setting up policies: %w", err)
	}
	if err := setupContainment(mgr, ns, f.containment, det.Sensors, det.Store, n.OnPhaseChange, handoff); err != nil {
		return fmt.Errorf("setting up containment: %w", err)
	}
	if err := setupSensor(mgr, ns, f.sensor); err != nil {
		return fmt.Errorf("setting up the sensor installer: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("adding health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("adding ready check: %w", err)
	}
	ctrl.Log.WithName("setup").Info("starting manager", "namespace", ns)
	return mgr.Start(ctrl.SetupSignalHandler())
}

// newManager builds the controller-runtime manager from its flags.
func newManager(f managerFlags) (ctrl.Manager, error) {
	var tlsOpts []func(*tls.Config)
	if !f.enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{
		BindAddress:   f.metricsAddr,
		SecureServing: f.secureMetrics,
		TLSOpts:       tlsOpts,
	}
	if f.secureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	restCfg := ctrl.GetConfigOrDie()
	restCfg.QPS = float32(f.qps)
	restCfg.Burst = f.burst
	// Lease renewals must never queue behind a burst's writes in the
	// in-flight limit: a renewal late by RenewDeadline loses leadership.
	leaderCfg := rest.CopyConfig(restCfg)
	restCfg.Wrap(kubeutil.LimitInFlight(f.maxInFlight))

	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme: newScheme(),
		// Nothing reads managedFields from the cache; cached Pods keep only
		// what the manager's readers use (see internal/podcache).
		Cache:                   podcache.CacheOptions(),
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  f.probeAddr,
		PprofBindAddress:        f.pprofAddr,
		LeaderElection:          f.enableLeaderElection,
		LeaderElectionID:        "bulkhead.security.bulkhead.dev",
		LeaderElectionConfig:    leaderCfg,
		LeaderElectionNamespace: f.namespace,
		LeaseDuration:           &f.leaseDuration,
		RenewDeadline:           &f.renewDeadline,
		RetryPeriod:             &f.retryPeriod,
		// Release the lease on clean shutdown so a successor takes over at once.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	return mgr, nil
}
