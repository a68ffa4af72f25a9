//go:build chaos

// Package flood posts 10,000 high scores for 1,000 pods within seconds to a
// manager on a local control plane and checks the safeguards: no policy
// exceeds maxActiveQuarantines (and the exhausted one says BudgetExhausted),
// the cluster-wide cap (--max-active-quarantines) holds, protected
// namespaces and Bulkhead's own namespace are never touched, no namespace
// holds more than its share of the cluster cap and a quiet namespace's pod
// is still contained after the flood (fairness), and the manager's memory
// stays bounded (peak RSS reported). Run with `make test-flood`.
package flood

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/test/framework"
	"github.com/bulkhead-dev/bulkhead/test/framework/kit"
)

var logf = framework.Logger("flood")

const (
	clusterCap = 40
	// nsShare is --namespace-share: two namespaces flood, so each may
	// hold a quarter of the cluster cap and half of it is left for others.
	nsShare    = 25
	nsCapShare = clusterCap * nsShare / 100
	budgetA    = 10  // policy flood-a: namespace flood-a only
	budgetAll  = 100 // policy flood-all: every load=flood namespace
	perPod     = 10
	isolate    = `[{type: Isolate, isolate: {allowDNS: true}}]`
)

func TestFlood(t *testing.T) {
	ctrllog.SetLogger(logr.Discard())
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	env, err := kit.Start(ctx, 12, logf)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	mgr, err := env.StartManager("manager", fmt.Sprintf("--max-active-quarantines=%d", clusterCap),
		fmt.Sprintf("--namespace-share=%d", nsShare), "--ingest-rate=100000", "--ingest-burst=100000")
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Stop(10 * time.Second)
	mgrNS := env.Install.Namespace

	// 1,000 pods: 400 in flood-a, 400 in flood-b (ReplicaSets of 10), 100
	// in payments (protected by the policy), 50 in kube-system (always
	// protected) and 50 looking like Bulkhead's own pods in its namespace.
	// Every namespace carries load=flood, so the broad policy selects all.
	var pods []framework.Score
	for _, n := range []string{"flood-a", "flood-b"} {
		if err := env.Namespace(n, map[string]string{"load": "flood", "tier": n}); err != nil {
			t.Fatal(err)
		}
		ws, err := env.CreateWorkloads(n, "w", "svc", 40, 10, 16)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws {
			for _, p := range w.Pods {
				pods = append(pods, framework.Score{Namespace: n, Pod: p})
			}
		}
	}
	if err := env.Namespace("payments", map[string]string{"load": "flood"}); err != nil {
		t.Fatal(err)
	}
	// A namespace that does not flood: its one pod is attacked afterwards.
	if err := env.Namespace("quiet", map[string]string{"load": "flood"}); err != nil {
		t.Fatal(err)
	}
	if err := env.Pod("quiet", "svc-0", map[string]string{"app": "svc"}, env.Cluster.Nodes[0]); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"kube-system", mgrNS} {
		if _, err := env.Cluster.Kubectl(ctx, nil, "label", "namespace", n, "load=flood", "--overwrite"); err != nil {
			t.Fatal(err)
		}
	}
	extra := []struct {
		ns     string
		count  int
		labels map[string]string
	}{
		{"payments", 100, map[string]string{"app": "svc"}},
		{"kube-system", 50, map[string]string{"app": "svc"}},
		{mgrNS, 50, map[string]string{"app": "svc", "app.kubernetes.io/name": "bulkhead", "control-plane": "controller-manager"}},
	}
	for _, x := range extra {
		for i := range x.count {
			name := fmt.Sprintf("svc-%d", i)
			if err := env.Pod(x.ns, name, x.labels, env.Cluster.Nodes[i%len(env.Cluster.Nodes)]); err != nil {
				t.Fatal(err)
			}
			pods = append(pods, framework.Score{Namespace: x.ns, Pod: name})
		}
	}
	logf("%d pods created", len(pods))

	if err := env.Apply(framework.Policies(policy("flood-a", map[string]string{"tier": "flood-a"}, budgetA, 100), policy("flood-all", map[string]string{"load": "flood"}, budgetAll, 0))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)

	// Memory: sample RSS every 100ms from here on.
	rss0, _ := mgr.RSS()
	stopSampling := make(chan struct{})
	var samplerWG sync.WaitGroup
	var maxRSS atomic.Int64
	samplerWG.Add(1)
	go func() {
		defer samplerWG.Done()
		for {
			if cur, _ := mgr.RSS(); cur > maxRSS.Load() {
				maxRSS.Store(cur)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	// 10,000 scores: ten rounds over every pod, batches of 100, 16 at once.
	var batches [][]framework.Score
	for round := range perPod {
		for i := 0; i < len(pods); i += 100 {
			b := make([]framework.Score, 0, 100)
			for _, p := range pods[i:min(i+100, len(pods))] {
				b = append(b, framework.Score{Namespace: p.Namespace, Pod: p.Pod, Detector: kit.Detector, Score: 0.99, Reason: fmt.Sprintf("decoy %d", round)})
			}
			batches = append(batches, b)
		}
	}
	codes := map[int]int{}
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(batches) {
					return
				}
				code, msg, err := mgr.Ingest.PostScores(ctx, batches[i]...)
				if err != nil {
					t.Errorf("post: %v", err)
				}
				mu.Lock()
				codes[code] += len(batches[i])
				if code != 202 && codes[code] <= 300 {
					logf("  batch %d: %d %s", i, code, msg)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sent := time.Since(t0)
	logf("REPORT flood: %d scores for %d pods posted in %s (%.0f/s); answers by status (scores): %v",
		len(batches)*100, len(pods), sent.Round(time.Millisecond), float64(len(batches)*100)/sent.Seconds(), codes)
	if sent > 30*time.Second {
		t.Logf("the flood took %s, not a few seconds: the numbers below are for a slower flood", sent)
	}

	// Let containment settle, then check; keep checking for 10s more.
	time.Sleep(20 * time.Second)
	var last summary
	for i := 0; i < 10; i++ {
		last = check(t, env, mgrNS)
		time.Sleep(time.Second)
	}
	close(stopSampling)
	samplerWG.Wait()
	_, hwm := mgr.RSS()
	logf("REPORT safeguards: %d unreleased policy Quarantines (cluster cap %d); by policy %v (budgets flood-a %d, flood-all %d); by namespace %v; phases %v",
		last.total, clusterCap, last.byPolicy, budgetA, budgetAll, last.byNS, last.phases)
	logf("REPORT manager memory: RSS %.1f MiB before the flood, peak %.1f MiB sampled every 100ms, VmHWM %.1f MiB",
		mib(rss0), mib(maxRSS.Load()), mib(hwm))
	if last.total == 0 {
		t.Error("nothing was contained: the flood did not reach the engine")
	}

	// Fairness: the flooders spent their shares, not everything; a real
	// threat in a quiet namespace is still contained.
	attack := []framework.Score{{Namespace: "quiet", Pod: "svc-0", Detector: kit.Detector, Score: 0.99, Reason: "real threat"}}
	for range 3 { // the policies' sustain
		if code, msg, err := mgr.Ingest.PostScores(ctx, attack...); err != nil || code != 202 {
			t.Fatalf("posting the quiet namespace's threat: %d %s %v", code, msg, err)
		}
	}
	t1 := time.Now()
	for {
		var qs securityv1alpha1.QuarantineList
		if err := env.Cluster.Client.List(ctx, &qs, client.InNamespace("quiet")); err != nil {
			t.Fatal(err)
		}
		if len(qs.Items) == 1 && qs.Items[0].Spec.Target.Name == "svc-0" && !qs.Items[0].IsReleased() {
			logf("REPORT fairness: quiet/svc-0 contained %s after its threat, with the flood's Quarantines in place", time.Since(t1).Round(time.Millisecond))
			break
		}
		if time.Since(t1) > 30*time.Second {
			t.Errorf("quiet/svc-0 was not contained after the flood: the flooding namespaces drained the shared budgets (%d Quarantines there)", len(qs.Items))
			break
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The exhausted policy says so.
	p := &securityv1alpha1.ThreatPolicy{}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := env.Cluster.Client.Get(ctx, client.ObjectKey{Name: "flood-a"}, p); err != nil {
			t.Fatal(err)
		}
		c := apimeta.FindStatusCondition(p.Status.Conditions, securityv1alpha1.ConditionReady)
		if c != nil && c.Status == metav1.ConditionFalse && c.Reason == securityv1alpha1.ReasonBudgetExhausted {
			logf("REPORT policy flood-a: Ready=False %s: %s", c.Reason, c.Message)
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("policy flood-a (budget %d, %d active) has no Ready=False BudgetExhausted: %+v", budgetA, last.byPolicy["flood-a"], p.Status.Conditions)
			break
		}
		time.Sleep(time.Second)
	}
	// Events on the exhausted budget (the alert has the metric too).
	evs, err := env.Fast.EventsV1().Events("").List(ctx, metav1.ListOptions{})
	if err == nil {
		reasons := map[string]int{}
		for _, e := range evs.Items {
			reasons[e.Reason]++
		}
		keys := make([]string, 0, len(reasons))
		for k := range reasons {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%d", k, reasons[k]))
		}
		logf("REPORT events by reason: %v", parts)
	}
	if t.Failed() {
		logf("manager log tail:\n%s", mgr.Logs(5000))
	}
}

func policy(name string, namespaces map[string]string, budget, share int) framework.Policy {
	return framework.Policy{
		NamespaceShare:       share,
		Name:                 name,
		NamespaceLabels:      namespaces,
		PodLabels:            map[string]string{"app": "svc"},
		Detectors:            []framework.Detector{{Name: kit.Detector, Weight: 100}},
		Sustain:              3,
		Response:             []framework.Step{{MinScore: "0.80", Actions: isolate}},
		ProtectedNamespaces:  []string{"payments"},
		MaxActiveQuarantines: budget,
	}
}

// seen keeps each violation reported once over the repeated checks.
var seen = map[string]bool{}

type summary struct {
	total    int
	byPolicy map[string]int
	byNS     map[string]int
	phases   map[securityv1alpha1.QuarantinePhase]int
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// check asserts the safeguards on the cluster as it is now.
func check(t *testing.T, env *kit.Env, mgrNS string) summary {
	t.Helper()
	errorf := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if !seen[msg] {
			seen[msg] = true
			t.Error(msg)
		}
	}
	s := summary{byPolicy: map[string]int{}, byNS: map[string]int{}, phases: map[securityv1alpha1.QuarantinePhase]int{}}
	var qs securityv1alpha1.QuarantineList
	if err := env.Cluster.Client.List(env.Ctx, &qs); err != nil {
		t.Fatal(err)
	}
	for _, q := range qs.Items {
		if q.IsReleased() || q.Annotations[securityv1alpha1.CreatedByPolicyAnnotation] == "" {
			continue
		}
		s.total++
		s.byNS[q.Namespace]++
		s.phases[q.Status.Phase]++
		if q.Spec.Reason != nil {
			for _, p := range q.Spec.Reason.Policies {
				s.byPolicy[p]++
			}
		}
	}
	if s.total > clusterCap {
		errorf("%d unreleased policy Quarantines: cluster cap %d exceeded", s.total, clusterCap)
	}
	if s.byPolicy["flood-a"] > budgetA {
		errorf("policy flood-a: %d active, budget %d", s.byPolicy["flood-a"], budgetA)
	}
	if s.byPolicy["flood-all"] > budgetAll {
		errorf("policy flood-all: %d active, budget %d", s.byPolicy["flood-all"], budgetAll)
	}
	for _, n := range []string{"flood-a", "flood-b"} {
		if s.byNS[n] > nsCapShare {
			errorf("namespace %s holds %d Quarantines, more than its share %d of the cluster cap", n, s.byNS[n], nsCapShare)
		}
	}
	for _, n := range []string{"payments", "kube-system", mgrNS} {
		if s.byNS[n] > 0 {
			errorf("%d Quarantines in protected namespace %s", s.byNS[n], n)
		}
		pods, err := env.Fast.CoreV1().Pods(n).List(env.Ctx, metav1.ListOptions{LabelSelector: securityv1alpha1.QuarantineLabel})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) > 0 {
			errorf("%d pods labelled quarantined in protected namespace %s", len(pods.Items), n)
		}
		nps, err := env.Fast.NetworkingV1().NetworkPolicies(n).List(env.Ctx, metav1.ListOptions{LabelSelector: securityv1alpha1.ManagedByLabel + "=" + securityv1alpha1.ManagedByValue})
		if err != nil {
			t.Fatal(err)
		}
		if len(nps.Items) > 0 {
			errorf("%d Bulkhead NetworkPolicies in protected namespace %s", len(nps.Items), n)
		}
	}
	return s
}
