// Command demo is `make demo`: it starts a local control plane with
// simulated nodes, installs Bulkhead from config/, runs a sample shop, lets
// the behavior model learn the shop's normal system calls from ADFA-LD
// training traces, replays a real ADFA-LD attack run as one pod's behaviour,
// and shows the pod scored, quarantined, isolated and released — exiting
// non-zero if any step does not happen.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bulkhead-dev/bulkhead/test/framework"
	"github.com/bulkhead-dev/bulkhead/test/framework/localcluster"
)

type config struct {
	clusterOnly    bool
	replicas       int32
	nodes          int
	learningWindow time.Duration
	trainTraces    int
	attackRun      string
	threshold      string
	escalate       string
}

func main() {
	var cfg config
	flag.BoolVar(&cfg.clusterOnly, "cluster-only", false, "Start the cluster, print how to use it and wait for Ctrl-C.")
	flag.IntVar(&cfg.nodes, "nodes", 3, "Simulated nodes.")
	var replicas int
	flag.IntVar(&replicas, "replicas", 4, "Replicas of the sample shop.")
	flag.DurationVar(&cfg.learningWindow, "learning-window", 25*time.Second, "Behavior model learning window (the product default is 24h).")
	flag.IntVar(&cfg.trainTraces, "train-traces", 833, "ADFA-LD training traces the shop's baseline learns from.")
	flag.StringVar(&cfg.attackRun, "attack", "Hydra_SSH_5", "ADFA-LD attack run (folder under attack/) replayed as one pod's behaviour.")
	flag.StringVar(&cfg.threshold, "threshold", "0.80", "Policy threshold: Isolate at or above it.")
	flag.StringVar(&cfg.escalate, "escalate", "0.85", "Second response step: ScaleToZero and CordonNode at or above it.")
	flag.Parse()
	cfg.replicas = int32(replicas)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{cfg: cfg, start: time.Now(), ctx: ctx}
	err := d.run()
	if err != nil && d.manager != nil {
		fmt.Printf("\n----- manager log (last 6 KiB of %s) -----\n%s\n", d.manager.LogPath, d.manager.Logs(6<<10))
		d.reportRefused()
		for _, args := range [][]string{{"get", "quarantines", "-A", "-o", "yaml"}, {"get", "events", "-n", "shop", "--sort-by=.lastTimestamp"}} {
			if out, kerr := d.kubectl(args...); kerr == nil {
				fmt.Printf("\n----- kubectl %s -----\n%s", joinArgs(args), out)
			}
		}
	}
	if d.cluster != nil {
		d.say("stopping the cluster and removing %s", d.cluster.Dir)
		d.cluster.Stop()
	}
	switch {
	case cfg.clusterOnly && err == nil:
		// Ctrl-C is how cluster-up ends.
	case errors.Is(ctx.Err(), context.Canceled):
		fmt.Println("\ninterrupted: everything started was stopped")
		os.Exit(130)
	case err != nil:
		fmt.Printf("\n✗ DEMO FAILED after %s: %v\n", time.Since(d.start).Round(100*time.Millisecond), err)
		os.Exit(1)
	}
}

// demo holds the run's state.
type demo struct {
	cfg     config
	start   time.Time
	ctx     context.Context
	cluster *localcluster.Cluster
	install *localcluster.Install
	manager *localcluster.Manager
	steps   []stepTime
}

type stepTime struct {
	title string
	took  time.Duration
}

func (d *demo) run() error {
	if !d.cfg.clusterOnly {
		d.banner()
	}
	if _, err := os.Stat(filepath.Join(framework.RepoRoot(), "config", "default")); err != nil {
		return fmt.Errorf("run the demo from the repository (make demo): %w", err)
	}
	if d.cfg.clusterOnly {
		if err := d.step("Start a local control plane", d.startCluster); err != nil {
			return err
		}
		fmt.Printf("\nexport KUBECONFIG=%s\nkubectl (v1.37.2): %s\nCtrl-C stops the cluster.\n", d.cluster.Kubeconfig, d.cluster.KubectlPath())
		<-d.ctx.Done()
		return nil
	}
	split, err := loadDataset()
	if err != nil {
		return err
	}
	if err := d.step("Start a local control plane", d.startCluster); err != nil {
		return err
	}
	for _, s := range []struct {
		title string
		fn    func() error
	}{
		{"Install Bulkhead from config/default", d.installBulkhead},
		{"Start the manager under its ServiceAccount", d.startManager},
		{"Deploy the sample shop", d.deployShop},
		{"Apply the ThreatPolicies", d.applyPolicies},
		{"Learn the shop's normal behaviour (ADFA-LD training traces)", func() error { return d.learn(split) }},
		{"Replay a real attack as one pod's behaviour (ADFA-LD " + d.cfg.attackRun + ")", func() error { return d.attack(split) }},
		{"Check the containment on the API objects", d.checkContained},
		{"Release the Quarantine", d.release},
		{"Check everything is restored", d.checkRestored},
	} {
		if err := d.step(s.title, s.fn); err != nil {
			return err
		}
	}
	d.summary()
	return nil
}

func (d *demo) banner() {
	fmt.Print(`
Bulkhead demo
=============
A real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) starts on this machine, with nodes and pods simulated by kwok.
There is no container runtime here, so the Bulkhead manager runs as a local
process instead of the Deployment's image — authenticated with a token of its
own ServiceAccount, so only the RBAC in config/rbac lets it act. There is no
CNI either: isolation is shown on the API objects (label, NetworkPolicy).
`)
}

// step runs one numbered step and records its duration.
func (d *demo) step(title string, fn func() error) error {
	fmt.Printf("\n[%6.1fs] ▶ %s\n", time.Since(d.start).Seconds(), title)
	t := time.Now()
	if err := fn(); err != nil {
		return fmt.Errorf("%s: %w", title, err)
	}
	took := time.Since(t)
	d.steps = append(d.steps, stepTime{title, took})
	fmt.Printf("[%6.1fs] ✓ %s (%s)\n", time.Since(d.start).Seconds(), title, took.Round(100*time.Millisecond))
	return nil
}

// say prints an indented progress line with the elapsed time.
func (d *demo) say(format string, args ...any) {
	fmt.Printf("[%6.1fs]   %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

// show prints command output, indented.
func (d *demo) show(cmd, out string) {
	fmt.Printf("           $ %s\n", cmd)
	for _, l := range splitLines(out) {
		fmt.Printf("           %s\n", l)
	}
}

func (d *demo) kubectl(args ...string) (string, error) {
	return d.cluster.Kubectl(d.ctx, nil, args...)
}

// showKubectl runs kubectl and prints the command and its output.
func (d *demo) showKubectl(args ...string) error {
	out, err := d.kubectl(args...)
	if err != nil {
		return err
	}
	d.show("kubectl "+joinArgs(args), out)
	return nil
}

func (d *demo) startCluster() error {
	c, err := localcluster.Start(d.ctx, localcluster.Options{Nodes: d.cfg.nodes, Logf: d.say})
	if err != nil {
		return err
	}
	d.cluster = c
	return d.showKubectl("get", "nodes")
}

func (d *demo) installBulkhead() error {
	inst, err := d.cluster.InstallBulkhead(d.ctx, framework.RepoRoot())
	if err != nil {
		return err
	}
	d.install = inst
	d.say("kubectl apply --server-side of %d objects rendered from config/default (CRDs, RBAC, namespace, Services, admission policy)", len(inst.Applied))
	d.say("not applied: %s — no container runtime here, so the manager runs as a local process", inst.Skipped)
	return d.showKubectl("get", "crd", "-l", "app.kubernetes.io/part-of=bulkhead")
}

func (d *demo) startManager() error {
	creds, err := d.cluster.IngestCredentials("demo-sensor", "behavior")
	if err != nil {
		return err
	}
	m, err := d.cluster.StartManager(d.ctx, d.install, localcluster.ManagerOptions{
		Ingest: creds,
		Args:   []string{"--behavior-learning-window=" + d.cfg.learningWindow.String()},
	})
	if err != nil {
		return err
	}
	d.manager = m
	d.say("bulkhead %s", joinArgs(m.Args))
	d.say("API identity: %s (token from the TokenRequest API; kubeconfig %s)", m.User, m.Kubeconfig)
	d.say("signal ingestion: %s (plain HTTP on loopback for the demo; bearer token required)", m.Ingest.URL)
	return nil
}
