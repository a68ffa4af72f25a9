package main

import (
	"context"
	"flag"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/bulkhead-dev/bulkhead/internal/controller/quarantine"
	"github.com/bulkhead-dev/bulkhead/internal/controller/threatpolicy"
	"github.com/bulkhead-dev/bulkhead/internal/podcache"
)

// Setup must not need the API server: a manager started before the API is
// reachable waits for it instead of exiting. This wires what runManager
// wires, with every flag at its default.
func TestSetupWithoutAPIServer(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1", Timeout: time.Second} // nothing listens on port 1
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: newScheme(), Cache: podcache.CacheOptions(), Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		t.Fatal(err)
	}
	var f flags
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	f.bind(fs)
	if err := fs.Parse([]string{"--ingest-bind-address=127.0.0.1:0", "--ingest-insecure"}); err != nil {
		t.Fatal(err)
	}
	obs, err := setupBehavior(mgr, f.manager.namespace, f.behavior)
	if err != nil || obs == nil {
		t.Fatalf("behavior: %v (model %v)", err, obs)
	}
	activity := threatpolicy.NewActivity()
	det, err := setupDetection(mgr, f.manager.namespace, f.detection, obs, activity)
	if err != nil {
		t.Fatalf("detection without an API server: %v", err)
	}
	if det.Pipeline.Model == nil {
		t.Error("the behavior model does not feed the pipeline")
	}
	n, err := setupNotify(mgr, f.manager.namespace, f.notify)
	if err != nil {
		t.Fatal(err)
	}
	handoff := quarantine.NewHandoff()
	if err := setupPolicies(mgr, f.manager.namespace, f.policies, det, activity, n, handoff); err != nil {
		t.Fatalf("policies without an API server: %v", err)
	}
	if err := setupContainment(mgr, f.manager.namespace, f.containment, det.Sensors, det.Store, n.OnPhaseChange, handoff); err != nil {
		t.Fatal(err)
	}
	if err := setupSensor(mgr, f.manager.namespace, f.sensor); err != nil {
		t.Fatalf("sensor installer without an API server: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := mgr.Start(ctx); err != nil {
		t.Fatalf("the manager gave up on the API server within %s: %v", 3*time.Second, err)
	}
}

// A disabled model is no model at all (not a typed nil in an interface).
func TestBehaviorDisabledFeedsNothing(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1", Timeout: time.Second}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: newScheme(), Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		t.Fatal(err)
	}
	obs, err := setupBehavior(mgr, "ns", behaviorFlags{enabled: false})
	if err != nil || obs != nil {
		t.Fatalf("disabled model: %v %v", obs, err)
	}
	det, err := setupDetection(mgr, "ns", detectionFlags{bindAddress: "127.0.0.1:0", insecure: true}, obs, threatpolicy.NewActivity())
	if err != nil {
		t.Fatal(err)
	}
	if det.Pipeline.Model != nil {
		t.Errorf("disabled model wired as %#v", det.Pipeline.Model)
	}
}

// A mistyped subcommand must fail before anything starts; it used to start
// the manager with the argument ignored.
func TestUnknownSubcommandFails(t *testing.T) {
	for _, args := range [][]string{{"frobnicate", "--help"}, {"frobnicate"}, {"--leader-elect=false", "extra"}} {
		err := runManager(args)
		if err == nil || !strings.Contains(err.Error(), "unknown subcommand") {
			t.Errorf("runManager(%q) = %v, want an unknown-subcommand error", args, err)
		}
	}
}
