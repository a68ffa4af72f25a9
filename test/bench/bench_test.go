//go:build bench

// Package bench measures Bulkhead's time to isolate (the final score to the
// NetworkPolicy and the pod label both persisted) and time to contain (every
// action applied) on a local control plane (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kwok nodes) with the manager
// running as a process under its ServiceAccount, each against its floor
// measured in the same run: the least writes replayed directly with
// client-go at the same concurrency and client QPS (isolate: NetworkPolicy
// and label; contain: Bulkhead's whole write sequence). Single threats on
// the idle cluster are timed too. Run with `make bench` (BENCH_PODS,
// BENCH_THREATS scale it).
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
	"github.com/bulkhead-dev/bulkhead/test/framework"
	"github.com/bulkhead-dev/bulkhead/test/framework/kit"
	"github.com/bulkhead-dev/bulkhead/test/framework/localcluster"
)

var logf = framework.Logger("bench")

const (
	sustain = 3
	// singles is how many single threats are timed one at a time.
	singles = 10
	actions = `[{type: Isolate, isolate: {allowDNS: true}}, {type: ScaleToZero}]`
)

// report collects the lines printed at the end.
var report []string

func add(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	report = append(report, line)
	logf("REPORT %s", line)
}

func TestBench(t *testing.T) {
	ctrllog.SetLogger(logr.Discard())
	pods := framework.EnvInt("BENCH_PODS", 2000)
	threats := framework.EnvInt("BENCH_THREATS", 200)
	if threats > pods {
		t.Fatalf("BENCH_THREATS %d > BENCH_PODS %d", threats, pods)
	}
	// The manager's defaults (cmd/main.go, cmd/containment.go).
	qps := framework.EnvInt("BENCH_QPS", 500)
	burst := framework.EnvInt("BENCH_BURST", 1000)
	conc := framework.EnvInt("BENCH_CONCURRENCY", 128)
	replicas := int32(pods / threats)
	nodes := (pods*2)/100 + 2
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

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
	// gctrace logs the live heap after each collection (memory per pod).
	env.ManagerEnv = []string{"GODEBUG=gctrace=1"}
	mgr, err := env.StartManager("manager", append([]string{
		"--ingest-rate=1000000", "--ingest-burst=1000000", "--max-active-quarantines=0",
		fmt.Sprintf("--kube-api-qps=%d", qps), fmt.Sprintf("--kube-api-burst=%d", burst),
		fmt.Sprintf("--containment-concurrency=%d", conc)}, append(prof.args(), extraManagerArgs()...)...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Stop(10 * time.Second)
	add("manager binary: %s", mgr.Binary)
	add("setup: local control plane (etcd, kube-apiserver %s, kube-controller-manager, kube-scheduler), %d kwok nodes; manager as a process under its ServiceAccount: --kube-api-qps=%d --kube-api-burst=%d --containment-concurrency=%d",
		kubeVersion(env), nodes, qps, burst, conc)
	add("load: %d pods in %d ReplicaSets of %d, %d simultaneous threats (one pod per ReplicaSet), policy sustain=%d, actions Isolate+ScaleToZero", int(replicas)*threats, threats, replicas, threats, sustain)

	// Memory per watched pod: the manager's RSS before and after the pods.
	time.Sleep(5 * time.Second)
	rss0, _ := mgr.RSS()
	heap0 := mgr.LiveHeap()
	const ns = "bench"
	if err := env.Namespace(ns, map[string]string{"load": "bench"}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	ws, err := env.CreateWorkloads(ns, "w", "svc", threats, replicas, 32)
	if err != nil {
		t.Fatal(err)
	}
	logf("%d pods created in %s", int(replicas)*threats, time.Since(t0).Round(time.Millisecond))
	waitRunning(t, env, ns, int(replicas)*threats)
	time.Sleep(10 * time.Second) // the manager's informers settle
	rss1, _ := mgr.RSS()
	heap1 := mgr.LiveHeap()
	perPod := float64(rss1-rss0) / float64(int(replicas)*threats)
	add("manager memory: RSS %.1f MiB idle, %.1f MiB watching %d more pods: %.0f bytes (%.2f KiB) RSS per watched pod (target < 2 KiB)",
		mib(rss0), mib(rss1), int(replicas)*threats, perPod, perPod/1024)
	if heap0 >= 0 && heap1 >= 0 {
		hp := float64(heap1-heap0) / float64(int(replicas)*threats)
		add("manager memory: live heap after GC (gctrace, 1 MB resolution) %d MB -> %d MB: %.0f bytes (%.2f KiB) per watched pod", heap0>>20, heap1>>20, hp, hp/1024)
	}

	if os.Getenv("BENCH_MEMORY_ONLY") != "" {
		fmt.Println("\n==== Bulkhead memory report (BENCH_MEMORY_ONLY) ====\n" + strings.Join(report, "\n"))
		return
	}
	// Single threats on an otherwise idle cluster, in their own namespace
	// the same policy covers.
	const sns = "single"
	if err := env.Namespace(sns, map[string]string{"load": "bench"}); err != nil {
		t.Fatal(err)
	}
	sws, err := env.CreateWorkloads(sns, "s", "svc", singles, 1, 8)
	if err != nil {
		t.Fatal(err)
	}
	waitRunning(t, env, sns, singles)
	if err := env.Apply(kit.Policy("bench", "bench", "svc", sustain, 10000, actions).YAML()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)

	var all []string
	for _, w := range ws {
		all = append(all, w.Pods...)
	}
	ingestion(t, env, mgr.Ingest, ns, all)

	// Sustain: sustain-1 high scores per threat pod, not timed.
	threatPods := make([]string, len(ws))
	owner := map[string]string{}
	for i, w := range ws {
		threatPods[i] = w.Pods[0]
		owner[w.Name] = w.Pods[0]
	}
	singlePods := make([]string, len(sws))
	sowner := map[string]string{}
	for i, w := range sws {
		singlePods[i] = w.Pods[0]
		sowner[w.Name] = w.Pods[0]
	}
	// The ingestion phase left every pod with a low score; wait for nothing.
	sustainPods := func(ns string, pods []string) {
		parallel(64, len(pods), func(i int) {
			for range sustain - 1 {
				code, msg, err := mgr.Ingest.PostScores(env.Ctx, framework.Score{Namespace: ns, Pod: pods[i], Detector: kit.Detector, Score: 0.95, Reason: "bench"})
				if err != nil || code != 202 {
					t.Errorf("sustain post %s: %d %s %v", pods[i], code, msg, err)
				}
			}
		})
	}
	sustainPods(ns, threatPods)
	sustainPods(sns, singlePods)
	if t.Failed() {
		return
	}
	time.Sleep(2 * time.Second)
	if n := countQuarantines(t, env, ns) + countQuarantines(t, env, sns); n != 0 {
		t.Fatalf("%d Quarantines before sustain completed", n)
	}

	// One threat at a time on the idle cluster.
	sw := startWatch(t, env, sns, sowner, time.Duration(60+singles*5)*time.Second)
	sreq0, err := apiRequests(env)
	if err != nil {
		t.Fatal(err)
	}
	var siso, scon, screated timings
	for _, p := range singlePods {
		time.Sleep(time.Second)
		start := time.Now()
		code, msg, err := mgr.Ingest.PostScores(env.Ctx, framework.Score{Namespace: sns, Pod: p, Detector: kit.Detector, Score: 0.95, Reason: "bench: sustain reached"})
		if err != nil || code != 202 {
			t.Fatalf("single post %s: %d %s %v", p, code, msg, err)
		}
		iso, con, qc := sw.waitAll(t, map[string]time.Time{p: start}, true)
		siso.lat, scon.lat, screated.lat = append(siso.lat, iso.lat...), append(scon.lat, con.lat...), append(screated.lat, qc.lat...)
	}
	slices.Sort(siso.lat)
	slices.Sort(scon.lat)
	slices.Sort(screated.lat)
	summarize("score to Quarantine created (part of the below)", "Bulkhead, single threat on an idle cluster", screated)
	summarize("time to isolate", "Bulkhead, single threat on an idle cluster", siso)
	summarize("time to contain", "Bulkhead, single threat on an idle cluster", scon)
	requestReport(t, env, "Bulkhead single threats", sreq0, len(singlePods))
	time.Sleep(2 * time.Second)

	w := startWatch(t, env, ns, owner, time.Duration(120+threats/5)*time.Second)
	req0, err := apiRequests(env)
	if err != nil {
		t.Fatal(err)
	}
	sent := make([]time.Time, len(threatPods))
	var wg sync.WaitGroup
	gate := make(chan struct{})
	prof.saveMetrics(env.Ctx, env, "before")
	profiled := prof.start(env.Ctx, env, "threats", 10*time.Second, 6*time.Second)
	for i := range threatPods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			sent[i] = time.Now()
			code, msg, err := mgr.Ingest.PostScores(env.Ctx, framework.Score{Namespace: ns, Pod: threatPods[i], Detector: kit.Detector, Score: 0.95, Reason: "bench: sustain reached"})
			if err != nil || code != 202 {
				t.Errorf("final post %s: %d %s %v", threatPods[i], code, msg, err)
			}
		}()
	}
	close(gate)
	wg.Wait()
	starts := map[string]time.Time{}
	for i, p := range threatPods {
		starts[p] = sent[i]
	}
	iso, con, qc := w.waitAll(t, starts, true)
	profiled()
	prof.saveMetrics(env.Ctx, env, "after")
	summarize("score to Quarantine created (part of the above)", "Bulkhead", qc)
	summarize("time to isolate", "Bulkhead", iso)
	summarize("time to contain", "Bulkhead", con)
	requestReport(t, env, "Bulkhead", req0, len(threatPods))
	if len(con.lat) != len(threatPods) {
		t.Errorf("Bulkhead contained %d of %d threats within the time limit", len(con.lat), len(threatPods))
	}
	_, peak := mgr.RSS()
	add("manager peak RSS during the run: %.1f MiB", mib(peak))
	checkQuarantines(t, env, ns, threatPods)

	// The floor: same writes, same concurrency and QPS, no manager.
	mgr.Stop(10 * time.Second)
	const fns = "floor"
	if err := env.Namespace(fns, map[string]string{"load": "floor"}); err != nil {
		t.Fatal(err)
	}
	fws, err := env.CreateWorkloads(fns, "w", "svc", threats, replicas, 32)
	if err != nil {
		t.Fatal(err)
	}
	waitRunning(t, env, fns, int(replicas)*threats)
	fowner := map[string]string{}
	fpods := make([]string, len(fws))
	for i, w := range fws {
		fowner[w.Name] = w.Pods[0]
		fpods[i] = w.Pods[0]
	}
	fw := startWatch(t, env, fns, fowner, time.Duration(120+threats/5)*time.Second)
	freq0, err := apiRequests(env)
	if err != nil {
		t.Fatal(err)
	}
	_, fcon := floor(t, env, fns, fws, qps, burst, conc, fw, replay, true)
	summarize("time to contain", "floor (client-go replay of the contain writes)", fcon)
	requestReport(t, env, "floor-contain", freq0, len(fws))

	// The isolate floor: NetworkPolicy and label only, one pod per
	// ReplicaSet; first one at a time, then all at once.
	const ins = "floor-isolate"
	if err := env.Namespace(ins, map[string]string{"load": "floor"}); err != nil {
		t.Fatal(err)
	}
	iws, err := env.CreateWorkloads(ins, "i", "svc", singles+threats, 1, 32)
	if err != nil {
		t.Fatal(err)
	}
	waitRunning(t, env, ins, singles+threats)
	iowner := map[string]string{}
	for _, w := range iws {
		iowner[w.Name] = w.Pods[0]
	}
	iw := startWatch(t, env, ins, iowner, time.Duration(120+threats/5)*time.Second)
	var fsiso timings
	for _, wl := range iws[:singles] {
		time.Sleep(time.Second)
		r, _ := floor(t, env, ins, []*kit.Workload{wl}, qps, burst, 1, iw, replayIsolate, false)
		fsiso.lat = append(fsiso.lat, r.lat...)
	}
	slices.Sort(fsiso.lat)
	summarize("time to isolate", "floor, single (client-go: Quarantine create, then NetworkPolicy apply and label patch at once)", fsiso)
	time.Sleep(2 * time.Second)
	ireq0, err := apiRequests(env)
	if err != nil {
		t.Fatal(err)
	}
	fiso, _ := floor(t, env, ins, iws[singles:], qps, burst, conc, iw, replayIsolate, false)
	summarize("time to isolate", "floor (client-go: Quarantine create, then NetworkPolicy apply and label patch at once)", fiso)
	requestReport(t, env, "floor-isolate", ireq0, threats)

	ratio("time to isolate", iso, fiso, " (goal at p99: <= 1.5, and p99 <= 1s)")
	ratio("time to contain", con, fcon, " (target at p99: <= 2)")
	ratio("time to isolate, single threat", siso, fsiso, " (goal: Bulkhead p50 <= 20ms)")

	fmt.Println()
	fmt.Println("==== Bulkhead time-to-isolate / time-to-contain report ====")
	for _, l := range report {
		fmt.Println(l)
	}
}

// requestReport adds the API requests per containment since before (every
// client's: the controller-manager and kwok deleting the scaled-down pods
// count in both phases alike).
func requestReport(t *testing.T, env *kit.Env, what string, before map[string]float64, n int) {
	after, err := apiRequests(env)
	if err != nil {
		t.Errorf("reading apiserver metrics: %v", err)
		return
	}
	rows, total := requestsPer(before, after, n)
	add("API requests per containment, %s phase (all clients): %.1f: %s", what, total, rows)
	add("API server, %s phase: %s", what, timingsPer(before, after, 8))
}

func kubeVersion(env *kit.Env) string {
	v, err := env.Fast.Discovery().ServerVersion()
	if err != nil {
		return "?"
	}
	return v.GitVersion
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func parallel(workers, n int, f func(i int)) {
	_ = kit.Parallel(workers, n, func(i int) error { f(i); return nil })
}

// waitRunning waits (bounded) for kwok to report the pods Running.
func waitRunning(t *testing.T, env *kit.Env, ns string, n int) {
	deadline := time.Now().Add(time.Duration(60+n/50) * time.Second)
	next := time.Now().Add(10 * time.Second)
	for {
		list, err := env.Fast.CoreV1().Pods(ns).List(env.Ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			t.Fatal(err)
		}
		running := 0
		for i := range list.Items {
			if list.Items[i].Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if running >= n {
			logf("%d pods Running in %s", running, ns)
			return
		}
		if time.Now().After(deadline) {
			logf("only %d of %d pods Running in %s; going on (ingestion needs them to exist only)", running, n, ns)
			return
		}
		if time.Now().After(next) {
			logf("  %d of %d pods Running", running, n)
			next = next.Add(10 * time.Second)
		}
		time.Sleep(time.Second)
	}
}

// ingestion measures events/s through POST /v1/scores with low scores (no
// containment), one object per request and in batches of 100.
func ingestion(t *testing.T, env *kit.Env, in framework.Ingest, ns string, pods []string) {
	for _, mode := range []struct {
		name          string
		batch, events int
	}{{"single", 1, 20000}, {"batch100", 100, 100000}} {
		reqs := mode.events / mode.batch
		var failed atomic.Int64
		t0 := time.Now()
		parallel(32, reqs, func(i int) {
			scores := make([]framework.Score, mode.batch)
			for j := range scores {
				scores[j] = framework.Score{Namespace: ns, Pod: pods[(i*mode.batch+j)%len(pods)], Detector: kit.Detector, Score: 0.1}
			}
			code, msg, err := in.PostScores(env.Ctx, scores...)
			if err != nil || code != 202 {
				if failed.Add(1) <= 3 {
					logf("ingestion %s: %d %s %v", mode.name, code, msg, err)
				}
			}
		})
		d := time.Since(t0)
		if f := failed.Load(); f > 0 {
			t.Errorf("ingestion %s: %d of %d requests failed", mode.name, f, reqs)
		}
		add("ingestion (%s, 32 concurrent HTTP clients, %d events over %d pods): %.0f events/s (%s)", mode.name, mode.events, len(pods), float64(mode.events)/d.Seconds(), d.Round(time.Millisecond))
	}
}

func countQuarantines(t *testing.T, env *kit.Env, ns string) int {
	var list securityv1alpha1.QuarantineList
	if err := env.Cluster.Client.List(env.Ctx, &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return len(list.Items)
}

// checkQuarantines asserts one Contained Quarantine per threat and that no
// other pod was contained.
func checkQuarantines(t *testing.T, env *kit.Env, ns string, threatPods []string) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var list securityv1alpha1.QuarantineList
		if err := env.Cluster.Client.List(env.Ctx, &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		contained := 0
		byPod := map[string]int{}
		for _, q := range list.Items {
			byPod[q.Spec.Target.Name]++
			if q.Status.Phase == securityv1alpha1.PhaseContained {
				contained++
			}
		}
		if contained == len(threatPods) || time.Now().After(deadline) {
			if contained != len(threatPods) || len(list.Items) != len(threatPods) {
				t.Errorf("%d Quarantines, %d Contained; want %d each", len(list.Items), contained, len(threatPods))
			}
			for _, p := range threatPods {
				if byPod[p] != 1 {
					t.Errorf("pod %s has %d Quarantines, want 1", p, byPod[p])
				}
			}
			add("check: %d Quarantines, %d Contained, one per threat pod", len(list.Items), contained)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// watcher records, per threat pod, when its NetworkPolicy was seen created,
// the pod seen with the quarantine label, and its owner seen at zero
// replicas.
type watcher struct {
	mu          sync.Mutex
	np, lbl, rs map[string]time.Time
	// created: the pod's Quarantine seen created (by target name).
	created  map[string]time.Time
	owner    map[string]string // ReplicaSet -> threat pod
	deadline time.Time
}

func startWatch(t *testing.T, env *kit.Env, ns string, owner map[string]string, limit time.Duration) *watcher {
	w := &watcher{np: map[string]time.Time{}, lbl: map[string]time.Time{}, rs: map[string]time.Time{}, created: map[string]time.Time{}, owner: owner, deadline: time.Now().Add(limit)}
	dc, err := dynamic.NewForConfig(env.Cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	qr := dc.Resource(securityv1alpha1.GroupVersion.WithResource("quarantines")).Namespace(ns)
	qs := resumable(t, env.Ctx, metav1.ListOptions{}, qr.List, qr.Watch)
	npc := env.Fast.NetworkingV1().NetworkPolicies(ns)
	nps := resumable(t, env.Ctx, metav1.ListOptions{}, npc.List, npc.Watch)
	rsc := env.Fast.AppsV1().ReplicaSets(ns)
	rss := resumable(t, env.Ctx, metav1.ListOptions{}, rsc.List, rsc.Watch)
	// Only labelled pods: a pod gaining the label arrives as ADDED.
	pc := env.Fast.CoreV1().Pods(ns)
	pods := resumable(t, env.Ctx, metav1.ListOptions{LabelSelector: securityv1alpha1.QuarantineLabel}, pc.List, pc.Watch)
	seen := func(m map[string]time.Time, key string) {
		now := time.Now()
		w.mu.Lock()
		if _, ok := m[key]; !ok {
			m[key] = now
		}
		w.mu.Unlock()
	}
	go func() {
		for ev := range nps.ResultChan() {
			np, ok := ev.Object.(*networkingv1.NetworkPolicy)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			seen(w.np, strings.TrimPrefix(np.Name, "bulkhead-"))
		}
	}()
	go func() {
		for ev := range qs.ResultChan() {
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok || ev.Type != watch.Added {
				continue
			}
			if name, _, _ := unstructured.NestedString(u.Object, "spec", "target", "name"); name != "" {
				seen(w.created, name)
			}
		}
	}()
	go func() {
		for ev := range pods.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Deleted || p.Labels[securityv1alpha1.QuarantineLabel] == "" {
				continue
			}
			seen(w.lbl, p.Name)
		}
	}()
	go func() {
		for ev := range rss.ResultChan() {
			rs, ok := ev.Object.(*appsv1.ReplicaSet)
			if !ok || rs.Spec.Replicas == nil || *rs.Spec.Replicas != 0 {
				continue
			}
			if pod, ok := w.owner[rs.Name]; ok {
				seen(w.rs, pod)
			}
		}
	}()
	go func() {
		<-time.After(limit + 10*time.Second)
		nps.Stop()
		rss.Stop()
		pods.Stop()
		qs.Stop()
	}()
	return w
}

// timings are one phase's latencies, sorted, and the span from the first
// start to the last completion.
type timings struct {
	lat  []time.Duration
	span time.Duration
}

// wait returns each pod's time to isolate (its NetworkPolicy and its label
// both persisted) and, when contain, its time to contain (isolated and the
// owner at zero); it waits for the contain times only when contain is set.
func (w *watcher) wait(t *testing.T, starts map[string]time.Time, contain bool) (isolate, contained timings) {
	isolate, contained, _ = w.waitAll(t, starts, contain)
	return isolate, contained
}

// waitAll is wait that also returns each start's time to its Quarantine
// being created (none for the replays that create none).
func (w *watcher) waitAll(t *testing.T, starts map[string]time.Time, contain bool) (isolate, contained, created timings) {
	next := time.Now().Add(5 * time.Second)
	for {
		w.mu.Lock()
		done := 0
		for p := range starts {
			_, a := w.np[p]
			_, b := w.lbl[p]
			_, c := w.rs[p]
			if a && b && (c || !contain) {
				done++
			}
		}
		np, lbl, rs := len(w.np), len(w.lbl), len(w.rs)
		w.mu.Unlock()
		if done == len(starts) || time.Now().After(w.deadline) {
			break
		}
		if time.Now().After(next) {
			logf("  done %d/%d (NetworkPolicies %d, pods labelled %d, owners at zero %d)", done, len(starts), np, lbl, rs)
			next = next.Add(5 * time.Second)
		}
		time.Sleep(2 * time.Millisecond)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var first, lastIso, lastContain time.Time
	for p, s := range starts {
		if first.IsZero() || s.Before(first) {
			first = s
		}
		if c, ok := w.created[p]; ok {
			created.lat = append(created.lat, c.Sub(s))
		}
		a, ok1 := w.np[p]
		b, ok2 := w.lbl[p]
		if !ok1 || !ok2 {
			continue
		}
		iso := later(a, b)
		lastIso = later(lastIso, iso)
		isolate.lat = append(isolate.lat, iso.Sub(s))
		if c, ok := w.rs[p]; ok && contain {
			end := later(iso, c)
			lastContain = later(lastContain, end)
			contained.lat = append(contained.lat, end.Sub(s))
		}
	}
	slices.Sort(isolate.lat)
	slices.Sort(contained.lat)
	slices.Sort(created.lat)
	isolate.span, contained.span = lastIso.Sub(first), lastContain.Sub(first)
	return isolate, contained, created
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// ratio adds Bulkhead's p50 and p99 over the floor's, goal appended.
func ratio(what string, a, b timings, goal string) {
	for _, pc := range []float64{50, 99} {
		if f := percentile(b.lat, pc); f > 0 {
			add("ratio: %s p%.0f Bulkhead / floor = %s / %s = %.2f%s", what, pc, percentile(a.lat, pc).Round(time.Millisecond), f.Round(time.Millisecond), float64(percentile(a.lat, pc))/float64(f), goal)
		}
	}
}

func percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(lat)))) - 1
	return lat[max(0, min(i, len(lat)-1))]
}

func summarize(phase, what string, r timings) {
	lat := r.lat
	if len(lat) == 0 {
		add("%s, %s: none completed", phase, what)
		return
	}
	rate := ""
	if r.span > 0 {
		rate = fmt.Sprintf("; %.0f/s (%d in %s)", float64(len(lat))/r.span.Seconds(), len(lat), r.span.Round(time.Millisecond))
	}
	add("%s, %s: n=%d p50 %s p90 %s p99 %s max %s%s", phase, what, len(lat),
		percentile(lat, 50).Round(100*time.Microsecond), percentile(lat, 90).Round(100*time.Microsecond),
		percentile(lat, 99).Round(100*time.Microsecond), lat[len(lat)-1].Round(100*time.Microsecond), rate)
}

// floor replays, per threat, the writes the manager makes for a policy
// containment with Isolate and ScaleToZero (read from
// internal/controller/threatpolicy and internal/controller/quarantine):
// create the Quarantine; add the finalizer (merge patch); status with the
// planned actions (intent); server-side apply the NetworkPolicy; label the
// pod (merge patch); record holder and original replicas on the owner
// (merge patch); read and update /scale to zero; final status. Reads the
// manager makes from the API server to decide (holders, target, owners)
// are left out: this is the least any controller must write.
func floor(t *testing.T, env *kit.Env, ns string, ws []*kit.Workload, qps, burst, conc int, w *watcher,
	replay func(context.Context, kubernetes.Interface, client.Client, string, *kit.Workload) error, contain bool) (isolate, contained timings) {
	cfg := rest.CopyConfig(env.Cluster.Config)
	cfg.QPS, cfg.Burst = float32(qps), burst
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(cfg, client.Options{Scheme: localcluster.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := env.Ctx
	starts := map[string]time.Time{}
	t0 := time.Now()
	for _, wl := range ws {
		starts[wl.Pods[0]] = t0
	}
	var errs atomic.Int64
	parallel(conc, len(ws), func(i int) {
		if err := replay(ctx, kc, cl, ns, ws[i]); err != nil {
			if errs.Add(1) <= 5 {
				t.Errorf("floor %s: %v", ws[i].Name, err)
			}
		}
	})
	return w.wait(t, starts, contain)
}

// replayIsolate is the least isolation takes (issue 17: "intent, policy,
// label"): the Quarantine that records the intent (with its finalizer, as
// the manager creates it), then the NetworkPolicy, server-side applied as
// Bulkhead does, and the pod label, both at once as Bulkhead makes them.
func replayIsolate(ctx context.Context, kc kubernetes.Interface, cl client.Client, ns string, wl *kit.Workload) error {
	pod := wl.Pods[0]
	q := &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: ns, Finalizers: []string{securityv1alpha1.QuarantineFinalizer},
			Labels: map[string]string{securityv1alpha1.ManagedByLabel: securityv1alpha1.ManagedByValue}},
		Spec: securityv1alpha1.QuarantineSpec{
			Target:  securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: pod},
			Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate, Isolate: &securityv1alpha1.IsolateParams{AllowDNS: true}}},
			Reason:  &securityv1alpha1.QuarantineReason{Policy: "floor", Policies: []string{"floor"}, Detector: kit.Detector, Score: "0.95", Summary: "floor"},
		},
	}
	if err := cl.Create(ctx, q, client.FieldOwner(securityv1alpha1.FieldManager)); err != nil {
		return fmt.Errorf("create Quarantine: %w", err)
	}
	owner := &metav1.OwnerReference{APIVersion: securityv1alpha1.GroupVersion.String(), Kind: "Quarantine", Name: pod, UID: q.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}
	return isolateWrites(ctx, kc, ns, pod, owner)
}

// isolateWrites server-side applies the NetworkPolicy as Bulkhead does
// (owned by the Quarantine when owner is set) and labels the pod, at once.
func isolateWrites(ctx context.Context, kc kubernetes.Interface, ns, pod string, owner *metav1.OwnerReference) error {
	np := &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: "bulkhead-" + pod, Namespace: ns, Labels: containment.ManagedLabels(pod)},
		Spec:       containment.DesiredNetworkPolicySpec(metav1.LabelSelector{MatchLabels: map[string]string{securityv1alpha1.QuarantineLabel: pod}}, true),
	}
	if owner != nil {
		np.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	data, _ := json.Marshal(np)
	policy := make(chan error, 1)
	go func() {
		_, err := kc.NetworkingV1().NetworkPolicies(ns).Patch(ctx, np.Name, types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: securityv1alpha1.FieldManager, Force: ptr.To(true)})
		policy <- err
	}()
	lbl, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{securityv1alpha1.QuarantineLabel: pod}}})
	_, lerr := kc.CoreV1().Pods(ns).Patch(ctx, pod, types.MergePatchType, lbl, metav1.PatchOptions{FieldManager: securityv1alpha1.FieldManager})
	if err := <-policy; err != nil {
		return fmt.Errorf("NetworkPolicy: %w", err)
	}
	if lerr != nil {
		return fmt.Errorf("pod label: %w", lerr)
	}
	return nil
}

func replay(ctx context.Context, kc kubernetes.Interface, cl client.Client, ns string, wl *kit.Workload) error {
	pod := wl.Pods[0]
	fo := client.FieldOwner(securityv1alpha1.FieldManager)
	q := &securityv1alpha1.Quarantine{
		// Without the policy label and annotation: admission lets only the
		// manager set them, and they do not change what the writes cost.
		ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: ns,
			Labels: map[string]string{securityv1alpha1.ManagedByLabel: securityv1alpha1.ManagedByValue}},
		Spec: securityv1alpha1.QuarantineSpec{
			Target:  securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: pod},
			Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate, Isolate: &securityv1alpha1.IsolateParams{AllowDNS: true}}, {Type: securityv1alpha1.ActionScaleToZero}},
			Reason:  &securityv1alpha1.QuarantineReason{Policy: "floor", Policies: []string{"floor"}, Detector: kit.Detector, Score: "0.95", Summary: "floor"},
		},
	}
	if err := cl.Create(ctx, q, fo); err != nil {
		return fmt.Errorf("create Quarantine: %w", err)
	}
	// finalizer
	fin, _ := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": []string{securityv1alpha1.QuarantineFinalizer}, "resourceVersion": q.ResourceVersion}})
	if err := cl.Patch(ctx, q, client.RawPatch(types.MergePatchType, fin), fo); err != nil {
		return fmt.Errorf("finalizer: %w", err)
	}
	now := metav1.Now()
	base := q.DeepCopy()
	q.Status.Phase = securityv1alpha1.PhaseContaining
	q.Status.Target = &securityv1alpha1.ResolvedTarget{UID: "replay", Node: "", Owner: "ReplicaSet/" + wl.Name}
	q.Status.Actions = []securityv1alpha1.ActionStatus{
		{Type: securityv1alpha1.ActionIsolate, State: securityv1alpha1.ActionPending, Resource: "NetworkPolicy/bulkhead-" + pod, ResourceAPIVersion: "networking.k8s.io/v1"},
		{Type: securityv1alpha1.ActionScaleToZero, State: securityv1alpha1.ActionPending, Resource: "ReplicaSet/" + wl.Name, ResourceAPIVersion: "apps/v1"},
	}
	containment.AppendAudit(&q.Status, now, containment.Actor, "TargetResolved", "Pod "+pod)
	containment.AppendAudit(&q.Status, now, containment.Actor, "EvidenceCaptured", "evidence")
	containment.AppendAudit(&q.Status, now, containment.Actor, "Containing", "actions planned: Isolate, ScaleToZero")
	if err := cl.Status().Patch(ctx, q, client.MergeFrom(base), fo); err != nil {
		return fmt.Errorf("status (intent): %w", err)
	}
	// NetworkPolicy, server-side applied as Bulkhead does, then the label.
	if err := isolateWrites(ctx, kc, ns, pod, &metav1.OwnerReference{APIVersion: securityv1alpha1.GroupVersion.String(), Kind: "Quarantine", Name: pod, UID: q.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}); err != nil {
		return err
	}
	ann, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		containment.HoldersAnnotation: ns + "/" + pod, containment.OriginalReplicasAnnotation: strconv.Itoa(int(wl.Replicas))}}})
	if _, err := kc.AppsV1().ReplicaSets(ns).Patch(ctx, wl.Name, types.MergePatchType, ann, metav1.PatchOptions{FieldManager: securityv1alpha1.FieldManager}); err != nil {
		return fmt.Errorf("holders: %w", err)
	}
	sc, err := kc.AppsV1().ReplicaSets(ns).GetScale(ctx, wl.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get scale: %w", err)
	}
	sc.Spec.Replicas, sc.ResourceVersion = 0, ""
	if _, err := kc.AppsV1().ReplicaSets(ns).UpdateScale(ctx, wl.Name, &autoscalingv1.Scale{ObjectMeta: sc.ObjectMeta, Spec: sc.Spec}, metav1.UpdateOptions{FieldManager: securityv1alpha1.FieldManager}); err != nil {
		return fmt.Errorf("scale: %w", err)
	}
	base = q.DeepCopy()
	q.Status.Phase = securityv1alpha1.PhaseContained
	for i := range q.Status.Actions {
		q.Status.Actions[i].State, q.Status.Actions[i].AppliedAt = securityv1alpha1.ActionApplied, &now
	}
	q.Status.ContainedAt = &now
	containment.AppendAudit(&q.Status, now, containment.Actor, "Applied", "Isolate applied")
	containment.AppendAudit(&q.Status, now, containment.Actor, "Applied", "ScaleToZero applied")
	containment.AppendAudit(&q.Status, now, containment.Actor, "Contained", "Isolate, ScaleToZero")
	if err := cl.Status().Patch(ctx, q, client.MergeFrom(base), fo); err != nil {
		return fmt.Errorf("status (contained): %w", err)
	}
	return nil
}
