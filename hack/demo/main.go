// Command demo is `make demo`: it starts a local control plane with
// simulated nodes, installs Bulkhead from config/, runs a sample shop and
// shows one shop pod scored, quarantined, isolated and released — exiting
// non-zero if any step does not happen. It needs nothing beside the clone:
//
//   - live (root with cgroup v2 and BTF): a real server runs in the pod's
//     kubelet-style cgroup under load, `bulkhead sensor` learns it with eBPF,
//     a reverse shell through the server's hole is scored and contained,
//     and the sensor cuts the shell's connection in the kernel;
//   - replay (anywhere else, or DEMO_FORCE_REPLAY=1): the sensor reports
//     of such a live run, shipped in testdata/, are posted to the manager
//     as that pod's node would.
//
// --mode=adfa keeps the older demo that replays the public ADFA-LD data set
// from $BULKHEAD_SHARED.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
	"github.com/bulkhead-dev/bulkhead/test/framework"
	"github.com/bulkhead-dev/bulkhead/test/framework/localcluster"
	"github.com/bulkhead-dev/bulkhead/test/framework/nodekit"
)

const (
	modeAuto   = "auto"
	modeLive   = "live"
	modeReplay = "replay"
	modeADFA   = "adfa"
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
	mode           string
	sensorLearning time.Duration
	record         string
	recording      string
	sensorArgs     []string
}

func main() {
	var cfg config
	flag.BoolVar(&cfg.clusterOnly, "cluster-only", false, "Start the cluster, print how to use it and wait for Ctrl-C.")
	flag.IntVar(&cfg.nodes, "nodes", 3, "Simulated nodes.")
	var replicas int
	flag.IntVar(&replicas, "replicas", 0, "Replicas of the sample shop (default 2; 4 with --mode=adfa).")
	flag.StringVar(&cfg.mode, "mode", modeAuto, "live (the sensor on this kernel), replay (a shipped recording of it), adfa (the public ADFA-LD data set from $BULKHEAD_SHARED) or auto: live where root with cgroup v2 and BTF, else replay; DEMO_FORCE_REPLAY=1 forces replay.")
	flag.DurationVar(&cfg.sensorLearning, "sensor-learning-window", 20*time.Second, "live: the sensor's --learning-window (the product default is 24h).")
	flag.StringVar(&cfg.record, "record", "", "live: also write the sensor's reports to this file (a recording for replay).")
	flag.StringVar(&cfg.recording, "recording", filepath.Join("hack", "demo", "testdata", "sensor-recording.jsonl"), "replay: the recording, relative to the repository.")
	flag.DurationVar(&cfg.learningWindow, "learning-window", 25*time.Second, "adfa: behavior model learning window (the product default is 24h).")
	flag.IntVar(&cfg.trainTraces, "train-traces", 833, "adfa: ADFA-LD training traces the shop's baseline learns from.")
	flag.StringVar(&cfg.attackRun, "attack", "Hydra_SSH_5", "adfa: ADFA-LD attack run (folder under attack/) replayed as one pod's behaviour.")
	flag.StringVar(&cfg.threshold, "threshold", "0.80", "adfa: policy threshold: Isolate at or above it.")
	flag.StringVar(&cfg.escalate, "escalate", "0.85", "adfa: second response step: ScaleToZero and CordonNode at or above it.")
	flag.Func("sensor-arg", "live: an extra argument for bulkhead sensor (repeatable), e.g. --sensor-arg=--debug.", func(v string) error {
		cfg.sensorArgs = append(cfg.sensorArgs, v)
		return nil
	})
	flag.Parse()
	cfg.replicas = int32(replicas)
	if err := cfg.chooseMode(); err != nil {
		fmt.Printf("✗ %v\n", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{cfg: cfg, start: time.Now(), ctx: ctx}
	err := d.run()
	if err != nil && d.live.sensor != nil && ctx.Err() == nil {
		fmt.Printf("\n----- bulkhead sensor log (last 4 KiB of %s) -----\n%s\n", d.live.sensor.LogPath, d.live.sensor.Log(4<<10))
	}
	if err != nil && d.manager != nil && ctx.Err() == nil {
		fmt.Printf("\n----- manager log (last 6 KiB of %s) -----\n%s\n", d.manager.LogPath, d.manager.Logs(6<<10))
		d.reportRefused()
		for _, args := range [][]string{{"get", "quarantines", "-A", "-o", "yaml"}, {"get", "events", "-n", "shop", "--sort-by=.lastTimestamp"}} {
			if out, kerr := d.kubectl(args...); kerr == nil {
				fmt.Printf("\n----- kubectl %s -----\n%s", joinArgs(args), out)
			}
		}
	}
	// Host processes, cgroups, pins and anchor pods go first, while the
	// API is still there.
	for i := len(d.exits) - 1; i >= 0; i-- {
		d.exits[i]()
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
	exits   []func()
	live    live
	replay  replay
	// reports is the latest sensor report shown (live or replayed).
	reports struct {
		sync.Mutex
		last wire.Report
		at   time.Time
		// score is the latest score of the attacked pod.
		score   wire.Score
		scoreAt time.Time
	}
}

// chooseMode settles --mode: auto is live where this host can run the
// sensor, else replay.
func (c *config) chooseMode() error {
	if os.Getenv("DEMO_FORCE_REPLAY") != "" && c.mode == modeAuto {
		c.mode = modeReplay
	}
	if c.mode == modeAuto {
		if err := nodekit.Available(); err != nil {
			fmt.Printf("live mode unavailable (%v): replaying a recording of it instead\n", err)
			c.mode = modeReplay
		} else {
			c.mode = modeLive
		}
	}
	switch c.mode {
	case modeLive:
		if err := nodekit.Available(); err != nil {
			return fmt.Errorf("--mode=live: %w", err)
		}
	case modeReplay, modeADFA:
	default:
		return fmt.Errorf("--mode=%q: want auto, live, replay or adfa", c.mode)
	}
	if c.replicas == 0 {
		c.replicas = 2
		if c.mode == modeADFA {
			c.replicas = 4
		}
	}
	if c.record != "" && c.mode != modeLive {
		return fmt.Errorf("--record needs live mode (root with cgroup v2 and BTF)")
	}
	return nil
}

// onExit runs f when the demo ends (last registered first), before the
// cluster stops.
func (d *demo) onExit(f func()) { d.exits = append(d.exits, f) }

// binary is the bulkhead binary the manager and sensor run.
func (d *demo) binary() string {
	if b := os.Getenv("BULKHEAD_BIN"); b != "" {
		return b
	}
	return filepath.Join(framework.RepoRoot(), "bin", "bulkhead")
}

type stepTime struct {
	title string
	took  time.Duration
}

func (d *demo) run() error {
	if !d.cfg.clusterOnly {
		d.banner()
	}
	if d.cfg.mode == modeLive {
		if _, err := os.Stat(d.binary()); err != nil {
			return fmt.Errorf("the bulkhead binary %s runs the sensor: set BULKHEAD_BIN or run through make (make build): %w", d.binary(), err)
		}
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
	type step struct {
		title string
		fn    func() error
	}
	steps := []step{
		{"Install Bulkhead from config/default", d.installBulkhead},
		{"Start the manager under its ServiceAccount", d.startManager},
		{"Deploy the sample shop", d.deployShop},
	}
	switch d.cfg.mode {
	case modeADFA:
		split, err := loadDataset()
		if err != nil {
			return err
		}
		steps = append(steps,
			step{"Apply the ThreatPolicies", d.applyPolicies},
			step{"Learn the shop's normal behaviour (ADFA-LD training traces)", func() error { return d.learn(split) }},
			step{"Replay a real attack as one pod's behaviour (ADFA-LD " + d.cfg.attackRun + ")", func() error { return d.attack(split) }},
			step{"Check the containment on the API objects", d.checkContained},
			step{"Release the Quarantine", d.release},
			step{"Check everything is restored", d.checkRestored})
	case modeLive:
		steps = append(steps,
			step{"Apply the ThreatPolicy (behavior detector, Isolate at 0.80)", d.applySensorPolicy},
			step{"Run the shop pod's container on this host (a real server in the pod's kubelet cgroup)", d.startShopContainer},
			step{"Start bulkhead sensor for the pod's node (eBPF)", d.startSensor},
			step{"Learn the pod's normal behaviour in the kernel", d.learnLive},
			step{"Attack: a reverse shell through the shop's hole", d.attackLive},
			step{"Check the isolation: the shell's connection cut in the kernel, NetworkPolicy", d.checkIsolated},
			step{"Release the Quarantine", d.releaseMarked},
			step{"Check everything is restored (no pins left)", d.checkReleased})
	case modeReplay:
		entries, err := loadRecording(filepath.Join(framework.RepoRoot(), d.cfg.recording))
		if err != nil {
			return err
		}
		d.replay.entries = entries
		if d.replay.pod, d.replay.node, err = recordedTarget(entries); err != nil {
			return err
		}
		steps = append(steps,
			step{"Apply the ThreatPolicy (behavior detector, Isolate at 0.80)", d.applySensorPolicy},
			step{"Prepare the replay of a recorded live sensor run", d.prepareReplay},
			step{"Replay the sensor's reports: learning, then the attack", func() error { return d.replayUntil(markReleased) }},
			step{"Check the isolation: kernel enforcement reported, NetworkPolicy", d.checkIsolated},
			step{"Release the Quarantine", d.release},
			step{"Replay the sensor's reports after the release", func() error { return d.replayUntil("") }},
			step{"Check everything is restored", d.checkReleased})
	}
	if err := d.step("Start a local control plane", d.startCluster); err != nil {
		return err
	}
	for _, s := range steps {
		if err := d.step(s.title, s.fn); err != nil {
			return err
		}
	}
	d.summary()
	return nil
}

func (d *demo) banner() {
	fmt.Printf("\nmode: %s\n", d.cfg.mode)
	fmt.Print(`
Bulkhead demo
=============
A real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) starts on this machine, with nodes and pods simulated by kwok.
There is no container runtime here, so the Bulkhead manager runs as a local
process instead of the Deployment's image — authenticated with a token of its
own ServiceAccount, so only the RBAC in config/rbac lets it act.
`)
	switch d.cfg.mode {
	case modeLive:
		fmt.Print(`Live: one shop pod's container is a real server process in that pod's
kubelet-style cgroup on this host, and ` + "`bulkhead sensor`" + ` runs for its node
with eBPF: it learns the pod, scores a real attack, reports to the manager
under its own pod-bound token, and cuts the attacker's connection in the
kernel when the pod is quarantined.
`)
	case modeReplay:
		fmt.Print(`Replay: this host cannot run the sensor live (or DEMO_FORCE_REPLAY is set),
so the reports ` + "`bulkhead sensor`" + ` sent in a live run of this demo
(` + d.cfg.recording + `) are posted to the manager as the pod's node,
under the sensor's own kind of token.
`)
	case modeADFA:
		fmt.Print(`ADFA-LD: the behavior model learns from the public data set's normal traces
and one attack run is replayed as a pod's behaviour. There is no CNI:
isolation is shown on the API objects (label, NetworkPolicy).
`)
	}
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
	// localcluster.InstallBulkhead takes the last ServiceAccount rendered,
	// which since config/sensor joined config/default is the sensor's:
	// run the manager as the one its Deployment names.
	if sa, err := d.managerServiceAccount(); err != nil {
		return err
	} else if sa != inst.ServiceAccount {
		inst.ServiceAccount = sa
	}
	d.say("kubectl apply --server-side of %d objects rendered from config/default (CRDs, RBAC, namespace, Services, admission policy)", len(inst.Applied))
	d.say("not applied: %s — no container runtime here, so the manager runs as a local process", inst.Skipped)
	return d.showKubectl("get", "crd", "-l", "app.kubernetes.io/part-of=bulkhead")
}

// managerServiceAccount is the serviceAccountName of config/default's
// manager Deployment.
func (d *demo) managerServiceAccount() (string, error) {
	out, err := d.kubectl("kustomize", filepath.Join(framework.RepoRoot(), "config", "default"))
	if err != nil {
		return "", err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	for {
		var dep appsv1.Deployment
		if err := dec.Decode(&dep); err != nil {
			if errors.Is(err, io.EOF) {
				return "", fmt.Errorf("config/default renders no manager Deployment")
			}
			return "", err
		}
		if dep.Kind == "Deployment" && dep.Spec.Template.Spec.ServiceAccountName != "" {
			return dep.Spec.Template.Spec.ServiceAccountName, nil
		}
	}
}

func (d *demo) startManager() error {
	creds, err := d.cluster.TrainingCredentials("demo-sensor", "behavior")
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
