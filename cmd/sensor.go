package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"syscall"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/sensor"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/collect"
)

// defaultTokenFile is where the sensor's DaemonSet projects its
// ServiceAccount token with audience bulkhead-ingest.
const defaultTokenFile = "/var/run/secrets/bulkhead/token"

func runSensor(args []string) error {
	var (
		cfg   sensor.Config
		send  sensor.SenderConfig
		pin   string
		debug bool
		// Percent of the node's CPU time.
		syscallBudget float64
	)
	fs := flag.NewFlagSet("bulkhead sensor", flag.ContinueOnError)
	fs.StringVar(&cfg.Node, "node-name", os.Getenv("NODE_NAME"), "This node's name (default: $NODE_NAME from the downward API).")
	fs.StringVar(&cfg.CgroupRoot, "cgroup-root", "/sys/fs/cgroup", "Root of the cgroup v2 hierarchy (/sys/fs/cgroup/unified on a hybrid host).")
	fs.StringVar(&send.URL, "ingest-url", "", "The manager's ingestion address, https://host:port (scores go to <url>/v1/sensor).")
	fs.StringVar(&send.TokenFile, "token-file", defaultTokenFile, "Bearer token for the manager, re-read before every request (in a pod: the projected ServiceAccount token).")
	fs.StringVar(&send.CAFile, "ca-file", "", "CA bundle that verifies the manager's certificate (default: system roots).")
	fs.BoolVar(&send.InsecureSkipVerify, "insecure-skip-verify", false, "Do not verify the manager's certificate. Tests only.")
	fs.DurationVar(&cfg.Behavior.LearningWindow, "learning-window", 24*time.Hour, "How long a new workload revision is learned before it is scored.")
	fs.StringVar(&cfg.ManagerNamespace, "manager-namespace", securityv1alpha1.DefaultManagerNamespace, "Namespace holding the shared baselines.")
	fs.StringVar(&pin, "bpf-pin-dir", "/sys/fs/bpf/bulkhead", "bpffs directory where enforcement programs are pinned (survive a sensor restart).")
	fs.IntVar(&cfg.EnforceWorkers, "enforce-workers", 4, "Pods isolated in the kernel at once when many arrive together (1..64).")
	fs.DurationVar(&send.HeartbeatInterval, "heartbeat-interval", 30*time.Second, "Longest silence towards the manager: a heartbeat is sent when there is nothing else.")
	fs.StringVar(&cfg.HealthAddr, "health-probe-bind-address", ":8085", "Address of /healthz and /readyz (not ready while behaviour collection is unavailable).")
	fs.StringVar(&cfg.MetricsAddr, "metrics-bind-address", ":8086", "Address of /metrics (bulkhead_sensor_*); 0 disables it.")
	fs.Float64Var(&syscallBudget, "syscall-cpu-budget", collect.DefaultSyscallCPUBudget,
		"Percent of the node's CPU time (all CPUs) that system-call collection may cost by estimate (host system calls/s x cost per call while attached). "+
			"Above it the system-call program is attached in windows (duty cycle, metric bulkhead_sensor_syscall_duty_ratio); execs, connections and resource usage are always collected. "+
			"0 keeps it always attached.")
	fs.BoolVar(&debug, "debug", false, "Verbose logs.")
	zapOpts := zap.Options{Development: false}
	zapOpts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if debug {
		zapOpts.Development = true
	}
	if cfg.EnforceWorkers < 1 || cfg.EnforceWorkers > 64 {
		return errors.New("--enforce-workers must be between 1 and 64")
	}
	if send.HeartbeatInterval <= 0 {
		return errors.New("--heartbeat-interval must be positive")
	}
	if math.IsNaN(syscallBudget) || syscallBudget < 0 || syscallBudget > 100 {
		return fmt.Errorf("--syscall-cpu-budget %v: want a percent from 0 (always attached) to 100", syscallBudget)
	}
	log := zap.New(zap.UseFlagOptions(&zapOpts))
	ctrl.SetLogger(log)
	restCfg, err := ctrl.GetConfig() // in-cluster, else KUBECONFIG
	if err != nil {
		return err
	}
	be, closeBackends := sensorBackends(cfg.CgroupRoot, pin, syscallBudget)
	defer closeBackends()
	be.Merge = sensor.MergeBaselines
	agent, err := sensor.New(cfg, be, send, restCfg, newScheme(), log.WithName("sensor"))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return agent.Run(ctx)
}
