//go:build bench

package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/test/framework"
	"github.com/bulkhead-dev/bulkhead/test/framework/kit"
	"github.com/bulkhead-dev/bulkhead/test/framework/localcluster"
	"github.com/bulkhead-dev/bulkhead/test/framework/nodekit"
)

// TestBenchDrop measures score → packets dropped: from the POST of the
// score that completes a policy's condition (sustain 1, action Isolate) to
// the first datagram of the pod's own process that the kernel refuses. The
// pods are kwok pods on the local control plane; each has a kubelet-style
// cgroup on this host with a real process in it (dropprobe) that sends one
// UDP datagram, then from just before its score one every 1ms (single pods)
// or BENCH_DROP_INTERVAL_MS (many at once); one real `bulkhead sensor` process
// per kwok node watches its node's pods and Quarantines and enforces with
// cgroup BPF programs, and the manager runs as a process under its
// ServiceAccount. Single pods first, one at a time on the idle cluster,
// then BENCH_DROP_PODS at once across the nodes. Where the time goes comes
// from the bench's watches (Quarantine created, pod label persisted) and
// the sensors' logs (sync start, Isolate start and duration). Run with
// `make bench-drop` (root, BPF).
func TestBenchDrop(t *testing.T) {
	if err := nodekit.Available(); err != nil {
		t.Skipf("score → packets dropped needs real cgroups and BPF: %v", err)
	}
	ctrllog.SetLogger(logr.Discard())
	nodes := framework.EnvInt("BENCH_DROP_NODES", 4)
	many := framework.EnvInt("BENCH_DROP_PODS", 200)
	// 200 Go processes waking every 10ms starve a 2-core host (its API
	// server included); 50ms keeps them under a tenth of a core.
	interval := time.Duration(framework.EnvInt("BENCH_DROP_INTERVAL_MS", 50)) * time.Millisecond
	const singleInterval = time.Millisecond
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	first := len(report)

	logf("starting a local cluster with %d kwok nodes", nodes)
	prof, err := newProfiler()
	if err != nil {
		t.Fatal(err)
	}
	env, err := kit.Start(ctx, nodes, logf)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	mgr, err := env.StartManager("manager", append([]string{"--ingest-rate=1000000", "--ingest-burst=1000000", "--max-active-quarantines=0"}, append(prof.args(), extraManagerArgs()...)...)...)
	if err != nil {
		t.Fatal(err)
	}
	if pl := os.Getenv("BENCH_FLOWSCHEMA"); pl != "" {
		// Experiment: the manager's requests in another priority level.
		if err := env.Apply(fmt.Sprintf(`apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {name: bench-manager}
spec:
  priorityLevelConfiguration: {name: %s}
  matchingPrecedence: 850
  distinguisherMethod: {type: ByUser}
  rules:
  - subjects: [{kind: ServiceAccount, serviceAccount: {name: bulkhead-controller-manager, namespace: %s}}]
    resourceRules: [{verbs: ["*"], apiGroups: ["*"], resources: ["*"], namespaces: ["*"], clusterScope: true}]
`, pl, env.Install.Namespace)); err != nil {
			t.Fatal(err)
		}
	}
	defer mgr.Stop(10 * time.Second)

	dir, err := os.MkdirTemp("", "bulkhead-bench-drop-")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if !t.Failed() {
			_ = os.RemoveAll(dir)
		} else {
			logf("kept logs in %s", dir)
		}
	}()
	nk, err := nodekit.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := nk.Close(); err != nil {
			t.Errorf("cleaning up the host: %v", err)
		}
		if p := nk.Pins(); len(p) != 0 {
			t.Errorf("pins left: %v", p)
		}
	}()
	probe := filepath.Join(dir, "bin", "dropprobe")
	build := exec.CommandContext(ctx, "go", "build", "-o", probe, "./test/bench/testdata/dropprobe")
	build.Dir = framework.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build dropprobe: %v\n%s", err, out)
	}

	sensors := map[string]*nodekit.Sensor{}
	for _, node := range env.Cluster.Nodes {
		id, err := nk.MintSensorIdentity(ctx, env.Cluster.Config, env.Install.Namespace, node)
		if err != nil {
			t.Fatal(err)
		}
		var ports [2]int
		for i := range ports {
			if ports[i], err = localcluster.FreePort(); err != nil {
				t.Fatal(err)
			}
		}
		s, err := nk.StartSensor(nodekit.SensorOptions{
			Binary: mgr.Binary, Node: node, IngestURL: mgr.Ingest.URL, ManagerNamespace: env.Install.Namespace,
			LearningWindow: time.Hour, Identity: id, Heartbeat: 30 * time.Second,
			Health: fmt.Sprintf("127.0.0.1:%d", ports[0]), Metrics: fmt.Sprintf("127.0.0.1:%d", ports[1]),
			// Log times to the nanosecond: the report reads them.
			Args: []string{"--zap-time-encoding=rfc3339nano"},
		})
		if err != nil {
			t.Fatal(err)
		}
		sensors[node] = s
	}
	for node, s := range sensors {
		deadline := time.Now().Add(90 * time.Second)
		for err := s.Ready(ctx); err != nil; err = s.Ready(ctx) {
			if time.Now().After(deadline) {
				t.Fatalf("sensor on %s not ready: %v\n%s", node, err, s.Log(4096))
			}
			time.Sleep(500 * time.Millisecond)
		}
	}

	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	go func() {
		buf := make([]byte, 64)
		for {
			if _, _, err := sink.ReadFrom(buf); err != nil {
				return
			}
		}
	}()

	owner := map[string]string{}
	logs := map[string]string{} // pod -> its probe's log
	procs := map[string]*nodekit.Proc{}
	// launch creates n one-pod ReplicaSets in a new namespace ns, each
	// with a probe in its pod's cgroup; the first fast probes send every
	// singleInterval once signalled, the others every interval.
	launch := func(ns, prefix string, n, fast int) []string {
		if err := env.Namespace(ns, map[string]string{"load": "drop"}); err != nil {
			t.Fatal(err)
		}
		ws, err := env.CreateWorkloads(ns, prefix, "svc", n, 1, 32)
		if err != nil {
			t.Fatal(err)
		}
		waitRunning(t, env, ns, n)
		list, err := env.Fast.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		byName := map[string]corev1.Pod{}
		for _, p := range list.Items {
			byName[p.Name] = p
		}
		pods := make([]string, len(ws))
		for i, w := range ws {
			pod := w.Pods[0]
			pods[i] = pod
			owner[w.Name] = pod
			c, err := nk.Container(byName[pod])
			if err != nil {
				t.Fatal(err)
			}
			every := interval
			if i < fast {
				every = singleInterval
			}
			p, err := c.Start("probe", probe, "-udp", sink.LocalAddr().String(), "-interval", every.String())
			if err != nil {
				t.Fatal(err)
			}
			logs[pod], procs[pod] = p.LogPath, p
		}
		return pods
	}
	mgrStopped := false
	const ns = "drop"
	pods := launch(ns, "d", singles+many, singles)
	probeTimes := func(pod string) (ok, dropped time.Time) {
		b, _ := os.ReadFile(logs[pod])
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			ns, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				continue
			}
			switch f[0] {
			case "ok":
				ok = time.Unix(0, ns)
			case "dropped":
				dropped = time.Unix(0, ns)
			}
		}
		return ok, dropped
	}
	// waitProbes polls the probes' logs (done must stay true once true: a
	// probe that is done is not read again, so polling 200 logs costs the
	// machine under test little).
	waitProbes := func(what string, ps []string, limit time.Duration, done func(ok, dropped time.Time) bool) {
		deadline := time.Now().Add(limit)
		left := slices.Clone(ps)
		for {
			left = slices.DeleteFunc(left, func(p string) bool { return done(probeTimes(p)) })
			if len(left) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of %d probes after %s", what, len(ps)-len(left), len(ps), limit)
			}
			if exited, err := mgr.Exited(); exited && !mgrStopped {
				t.Fatalf("%s: the manager exited (%v):\n%s", what, err, mgr.Logs(8192))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitProbes("probes sending", pods, time.Minute, func(ok, _ time.Time) bool { return !ok.IsZero() })
	if err := env.Apply(kit.Policy("drop", "drop", "svc", 1, 10000, `[{type: Isolate}]`).YAML()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	for _, p := range pods {
		if _, d := probeTimes(p); !d.IsZero() {
			t.Fatalf("pod %s dropped before any score", p)
		}
	}
	add("score → packets dropped: local control plane (kube-apiserver %s), %d kwok nodes, one `bulkhead sensor` process per node (%s), the manager as a process; %d+%d pods each with a real process in its kubelet-style cgroup sending one UDP datagram, then from its score on one every %s (single pods) or %s (many); policy sustain=1, action Isolate; load average %s",
		kubeVersion(env), nodes, mgr.Binary, singles, many, singleInterval, interval, loadavg())

	w := startWatch(t, env, ns, owner, time.Duration(120+many)*time.Second)
	var acceptedMu sync.Mutex
	accepted := map[string]time.Time{} // pod -> when its POST was answered
	post := func(pod string) {
		// The probe sends at its fast interval from now on.
		_ = procs[pod].Cmd.Process.Signal(syscall.SIGUSR1)
		code, msg, err := mgr.Ingest.PostScores(ctx, framework.Score{Namespace: ns, Pod: pod, Detector: kit.Detector, Score: 0.95, Reason: "bench: condition complete"})
		if err != nil || code != 202 {
			t.Errorf("post %s: %d %s %v", pod, code, msg, err)
		}
		acceptedMu.Lock()
		accepted[pod] = time.Now()
		acceptedMu.Unlock()
	}
	starts := map[string]time.Time{}
	for _, p := range pods[:singles] {
		time.Sleep(time.Second)
		starts[p] = time.Now()
		post(p)
		waitProbes("single pod "+p+" dropped", []string{p}, 30*time.Second, func(_, d time.Time) bool { return !d.IsZero() })
	}
	dropReport(t, w, "1 pod at a time (idle cluster)", pods[:singles], starts, accepted, probeTimes, sensors, "p99 <= 250ms")

	time.Sleep(2 * time.Second)
	starts = map[string]time.Time{}
	var mu sync.Mutex
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range pods[singles:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			now := time.Now()
			mu.Lock()
			starts[p] = now
			mu.Unlock()
			post(p)
		}()
	}
	profiled := prof.start(ctx, env, "drop", 5*time.Second, 2*time.Second)
	close(gate)
	wg.Wait()
	waitProbes(fmt.Sprintf("%d pods dropped", many), pods[singles:], time.Duration(60+many/2)*time.Second, func(_, d time.Time) bool { return !d.IsZero() })
	profiled()
	dropReport(t, w, fmt.Sprintf("%d pods at once across %d nodes", many, nodes), pods[singles:], starts, accepted, probeTimes, sensors, "p99 <= 1s")

	// The floor: what the sensors need from the API, the Quarantines alone,
	// created with client-go at once for as many fresh pods, no manager.
	mgr.Stop(10 * time.Second)
	mgrStopped = true
	fpods := launch("drop-floor", "f", many, 0)
	waitProbes("floor probes sending", fpods, time.Minute, func(ok, _ time.Time) bool { return !ok.IsZero() })
	time.Sleep(3 * time.Second)
	logf("floor: %d Quarantines at once, no manager", many)
	fstarts := floorQuarantines(t, env, "drop-floor", fpods, procs)
	waitProbes(fmt.Sprintf("floor: %d pods dropped", many), fpods, time.Duration(60+many/2)*time.Second, func(_, d time.Time) bool { return !d.IsZero() })
	// dropped is each pod's start → first refused datagram, sorted.
	dropped := func(ps []string, from map[string]time.Time) timings {
		var tm timings
		for _, p := range ps {
			if _, d := probeTimes(p); !d.IsZero() {
				tm.lat = append(tm.lat, d.Sub(from[p]))
			}
		}
		slices.Sort(tm.lat)
		return tm
	}
	fl := dropped(fpods, fstarts)
	summarize("score → packets dropped", fmt.Sprintf("floor, %d pods at once (client-go: Quarantine create → first refused datagram, no manager)", many), fl)
	ratio("score → packets dropped", dropped(pods[singles:], starts), fl, "")
	add("load average at the end: %s", loadavg())

	fmt.Println()
	fmt.Println("==== Bulkhead score → packets dropped report ====")
	for _, l := range report[first:] {
		fmt.Println(l)
	}
}

// sensorIsolation is one "isolated pod in the kernel" log line: when the
// sync that saw the pod began, when Isolate began and how long it took.
type sensorIsolation struct {
	syncStart, isolateStart, isolateEnd time.Time
	// attach is how long Attach took (zero for a sensor that logs none).
	attach time.Duration
}

// sensorLogs reads the isolations from the sensors' JSON logs, by pod name
// (the first isolation of each).
func sensorLogs(t *testing.T, sensors map[string]*nodekit.Sensor) map[string]sensorIsolation {
	out := map[string]sensorIsolation{}
	for _, s := range sensors {
		f, err := os.Open(s.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l struct {
				Msg      string    `json:"msg"`
				TS       time.Time `json:"ts"`
				Pod      string    `json:"pod"`
				SinceS   float64   `json:"sinceSyncStartSeconds"`
				IsolateS float64   `json:"isolateSeconds"`
				AttachS  float64   `json:"attachSeconds"`
			}
			if json.Unmarshal(sc.Bytes(), &l) != nil || l.Msg != "isolated pod in the kernel" {
				continue
			}
			_, pod, _ := strings.Cut(l.Pod, "/")
			if _, ok := out[pod]; ok {
				continue
			}
			end := l.TS
			start := end.Add(-seconds(l.IsolateS))
			out[pod] = sensorIsolation{syncStart: start.Add(-seconds(l.SinceS)), isolateStart: start, isolateEnd: end, attach: seconds(l.AttachS)}
		}
		_ = f.Close()
	}
	return out
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// dropReport adds score → dropped p50/p99 and its parts for pods.
func dropReport(t *testing.T, w *watcher, what string, pods []string, starts, accepted map[string]time.Time,
	probeTimes func(string) (time.Time, time.Time), sensors map[string]*nodekit.Sensor, goal string) {
	// A datagram is refused while Isolate still runs: give the sensors a
	// moment to log the isolations that the drops have already shown.
	iso := sensorLogs(t, sensors)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); iso = sensorLogs(t, sensors) {
		missing := 0
		for _, p := range pods {
			if _, ok := iso[p]; !ok {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var total, answered, created, label, sensorPart, createdToSync, createdToDrop, toSync, syncToIsolate, attach, isolate, toDrop timings
	var first, last time.Time
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range pods {
		s := starts[p]
		_, d := probeTimes(p)
		if d.IsZero() {
			continue
		}
		total.lat = append(total.lat, d.Sub(s))
		if a, ok := accepted[p]; ok {
			answered.lat = append(answered.lat, a.Sub(s))
		}
		if first.IsZero() || s.Before(first) {
			first = s
		}
		last = later(last, d)
		c, hasCreated := w.created[p]
		if hasCreated {
			created.lat = append(created.lat, c.Sub(s))
			createdToDrop.lat = append(createdToDrop.lat, d.Sub(c))
		}
		l, ok := w.lbl[p]
		if ok {
			label.lat = append(label.lat, l.Sub(s))
			sensorPart.lat = append(sensorPart.lat, d.Sub(l))
		}
		if si, ok2 := iso[p]; ok2 {
			if hasCreated {
				createdToSync.lat = append(createdToSync.lat, si.syncStart.Sub(c))
			}
			if ok {
				toSync.lat = append(toSync.lat, si.syncStart.Sub(l))
			}
			syncToIsolate.lat = append(syncToIsolate.lat, si.isolateStart.Sub(si.syncStart))
			isolate.lat = append(isolate.lat, si.isolateEnd.Sub(si.isolateStart))
			if si.attach > 0 {
				attach.lat = append(attach.lat, si.attach)
			}
			toDrop.lat = append(toDrop.lat, d.Sub(si.isolateStart))
		}
	}
	for _, tm := range []*timings{&total, &answered, &created, &label, &sensorPart, &createdToSync, &createdToDrop, &toSync, &syncToIsolate, &attach, &isolate, &toDrop} {
		slices.Sort(tm.lat)
	}
	total.span = last.Sub(first)
	summarize("score → packets dropped", what+" (goal "+goal+")", total)
	summarize("  score → POST answered (202)", what, answered)
	summarize("  score → Quarantine created (manager)", what, created)
	summarize("  score → pod label persisted (manager: Quarantine, NetworkPolicy, label)", what, label)
	summarize("  pod label persisted → first refused datagram", what, sensorPart)
	summarize("  Quarantine created → first refused datagram (the sensor's whole part: it enforces from the Quarantine, not the label)", what, createdToDrop)
	summarize("    Quarantine created → sensor sync start (watch, queued syncs)", what, createdToSync)
	summarize("    label persisted → sensor sync start (negative: the sync began before the label)", what, toSync)
	summarize("    sensor sync start → Attach start (reads of the sync, earlier Attaches)", what, syncToIsolate)
	summarize("    Attach start → first refused datagram (load, attach; + up to one probe interval)", what, toDrop)
	summarize("    Attach() (intent, maps, load, attach, pin: packets dropped from its return)", what, attach)
	summarize("    Attach start → Isolate() end (also every Attach of the sync before it, then the socket cut and the intent)", what, isolate)
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// floorQuarantines signals the pods' probes, then creates one Quarantine
// (Isolate) per pod, all at once, as the cluster's admin with client-go;
// it returns when each create was sent.
func floorQuarantines(t *testing.T, env *kit.Env, ns string, pods []string, procs map[string]*nodekit.Proc) map[string]time.Time {
	cfg := rest.CopyConfig(env.Cluster.Config)
	cfg.QPS, cfg.Burst = 2000, 4000
	cl, err := client.New(cfg, client.Options{Scheme: localcluster.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		_ = procs[p].Cmd.Process.Signal(syscall.SIGUSR1)
	}
	starts := make([]time.Time, len(pods))
	took := make([]time.Duration, len(pods))
	var errs atomic.Int64
	parallel(len(pods), len(pods), func(i int) {
		q := &securityv1alpha1.Quarantine{
			ObjectMeta: metav1.ObjectMeta{Name: pods[i], Namespace: ns},
			Spec: securityv1alpha1.QuarantineSpec{
				Target:  securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: pods[i]},
				Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}},
			},
		}
		starts[i] = time.Now()
		if err := cl.Create(env.Ctx, q); err != nil && errs.Add(1) <= 5 {
			t.Errorf("floor create %s: %v", pods[i], err)
		}
		took[i] = time.Since(starts[i])
	})
	slices.Sort(took)
	summarize("  Quarantine create answered", fmt.Sprintf("floor, %d at once", len(pods)), timings{lat: took})
	out := make(map[string]time.Time, len(pods))
	for i, p := range pods {
		out[p] = starts[i]
	}
	return out
}
