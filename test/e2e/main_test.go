//go:build e2e

// Package e2e runs Bulkhead end to end on a real local control plane: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler and kwok-simulated
// nodes, with Bulkhead installed from config/ and the manager running as a
// local process under its ServiceAccount's token, so config/rbac is what is
// enforced. Run with `make test-e2e`. Isolation is checked on the API objects
// (labels, NetworkPolicies): there is no CNI here to drop packets.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/bulkhead-dev/bulkhead/test/framework"
	"github.com/bulkhead-dev/bulkhead/test/framework/localcluster"
)

// env is the cluster and manager every scenario shares.
var env struct {
	// ctx is cancelled on Ctrl-C, so every wait ends and cleanups run.
	ctx     context.Context
	cluster *localcluster.Cluster
	install *localcluster.Install
	manager *localcluster.Manager
	// creds are the manager's ingest credentials (other replicas share them).
	creds *localcluster.IngestCredentials
}

var logf = framework.Logger("e2e")

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	env.ctx = ctx

	c, err := localcluster.Start(ctx, localcluster.Options{Nodes: 3, Logf: logf})
	if err != nil {
		logf("starting the local cluster: %v", err)
		return 1
	}
	defer c.Stop()
	env.cluster = c
	if err := startBulkhead(ctx); err != nil {
		logf("%v", err)
		return 1
	}
	code := m.Run()
	logf("scenarios done (exit %d); stopping the cluster", code)
	return code
}

// startBulkhead installs config/default (CRDs, RBAC, namespace) and starts
// the manager with signal ingestion on a free loopback port.
func startBulkhead(ctx context.Context) error {
	inst, err := env.cluster.InstallBulkhead(ctx, framework.RepoRoot())
	if err != nil {
		return fmt.Errorf("installing Bulkhead from config/default: %w", err)
	}
	env.install = inst
	logf("installed %d objects from config/default (skipped %s: the manager runs as a local process)", len(inst.Applied), inst.Skipped)

	creds, err := env.cluster.IngestCredentials("e2e", externalDetector, "behavior", "falco")
	if err != nil {
		return err
	}
	env.creds = creds
	mgr, err := env.cluster.StartManager(ctx, inst, localcluster.ManagerOptions{Ingest: creds})
	if err != nil {
		return fmt.Errorf("starting the manager: %w", err)
	}
	env.manager = mgr
	return nil
}
