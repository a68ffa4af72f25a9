//go:build chaos

// Package chaos contains and releases workloads on a local control plane
// while the manager is SIGKILLed at random instants and restarted, and the
// API server is restarted once; then checks that every Quarantine reached
// its final phase and nothing Bulkhead did is left behind. A second test
// runs two manager replicas with leader election and kills the leader.
// Run with `make test-chaos` (full) or `make ci-chaos` (smoke).
package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
	"github.com/bulkhead-dev/bulkhead/test/framework"
	"github.com/bulkhead-dev/bulkhead/test/framework/kit"
	"github.com/bulkhead-dev/bulkhead/test/framework/localcluster"
)

var logf = framework.Logger("chaos")

const (
	ns        = "chaos"
	leaseName = "bulkhead.security.bulkhead.dev"
	replicas  = 2
)

// Short leader-election timings keep a restarted single replica from
// waiting 15s for its dead predecessor's lease after every SIGKILL.
var shortLease = []string{"--leader-elect=true", "--leader-elect-lease-duration=6s", "--leader-elect-renew-deadline=4s", "--leader-elect-retry-period=1s"}

func setup(t *testing.T, nodes, workloads int) (*kit.Env, []*kit.Workload) {
	ctrllog.SetLogger(logr.Discard())
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	t.Cleanup(cancel)
	env, err := kit.Start(ctx, nodes, logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Stop)
	if err := env.Namespace(ns, nil); err != nil {
		t.Fatal(err)
	}
	ws, err := env.CreateWorkloads(ns, "w", "svc", workloads, replicas, 16)
	if err != nil {
		t.Fatal(err)
	}
	return env, ws
}

// actionsFor mixes the actions: every third Quarantine leaves its pod in
// place (Isolate + CordonNode) so the label removal is checked on a live pod.
func actionsFor(i int) []securityv1alpha1.Action {
	iso := securityv1alpha1.Action{Type: securityv1alpha1.ActionIsolate, Isolate: &securityv1alpha1.IsolateParams{AllowDNS: true}}
	switch i % 3 {
	case 0:
		return []securityv1alpha1.Action{iso, {Type: securityv1alpha1.ActionScaleToZero}, {Type: securityv1alpha1.ActionCordonNode}}
	case 1:
		return []securityv1alpha1.Action{iso, {Type: securityv1alpha1.ActionScaleToZero}}
	default:
		return []securityv1alpha1.Action{iso, {Type: securityv1alpha1.ActionCordonNode}}
	}
}

// retry runs f until it succeeds or the timeout passes (the API server may
// be restarting).
func retry(ctx context.Context, timeout time.Duration, what string, f func() error) error {
	return framework.Wait{What: what, Timeout: timeout}.Until(ctx, func(context.Context) error { return f() })
}

// leaderActionsFor never combines ScaleToZero with CordonNode: that pair
// can leave a Quarantine Containing for good (the pod is gone after the
// scale-down and a conflicting node write left CordonNode Pending), which
// TestChaos reports; the leader test is about the handover.
func leaderActionsFor(i int) []securityv1alpha1.Action {
	if i%3 == 0 {
		return actionsFor(1)
	}
	return actionsFor(i)
}

func createQuarantine(env *kit.Env, i int, w *kit.Workload) error {
	return createWith(env, i, w, actionsFor(i))
}

func createWith(env *kit.Env, i int, w *kit.Workload, actions []securityv1alpha1.Action) error {
	q := framework.Quarantine(ns, fmt.Sprintf("q-%d", i), w.Pods[0], actions...)
	q.Spec.Reason = &securityv1alpha1.QuarantineReason{Summary: "chaos"}
	return retry(env.Ctx, 2*time.Minute, "creating Quarantine "+q.Name, func() error {
		err := env.Cluster.Client.Create(env.Ctx, q.DeepCopy())
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
}

func waitPhase(env *kit.Env, name string, timeout time.Duration, phases ...securityv1alpha1.QuarantinePhase) (*securityv1alpha1.Quarantine, error) {
	var q *securityv1alpha1.Quarantine
	err := framework.Wait{What: fmt.Sprintf("Quarantine %s in %v", name, phases), Timeout: timeout, Every: 200 * time.Millisecond}.Until(env.Ctx, func(ctx context.Context) error {
		q = &securityv1alpha1.Quarantine{}
		if err := env.Cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, q); err != nil {
			return err
		}
		for _, p := range phases {
			if q.Status.Phase == p {
				return nil
			}
		}
		return fmt.Errorf("phase %q", q.Status.Phase)
	})
	if err != nil {
		return nil, err
	}
	return q, nil
}

func release(env *kit.Env, name string) error {
	patch := []byte(`{"spec":{"released":true}}`)
	return retry(env.Ctx, 2*time.Minute, "releasing "+name, func() error {
		q := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
		return env.Cluster.Client.Patch(env.Ctx, q, client.RawPatch(types.MergePatchType, patch))
	})
}

// cycle contains and releases one workload. A Quarantine that does not
// reach Contained (or Failed) is an error, and is still released, so the
// end state shows whether its release cleans up.
func cycle(env *kit.Env, i int, w *kit.Workload, timeout time.Duration) error {
	name := fmt.Sprintf("q-%d", i)
	if err := createQuarantine(env, i, w); err != nil {
		return fmt.Errorf("creating %s: %w", name, err)
	}
	_, stuck := waitPhase(env, name, timeout, securityv1alpha1.PhaseContained, securityv1alpha1.PhaseFailed)
	if err := release(env, name); err != nil {
		return errors.Join(stuck, fmt.Errorf("releasing %s: %w", name, err))
	}
	_, err := waitPhase(env, name, timeout, securityv1alpha1.PhaseReleased)
	return errors.Join(stuck, err)
}

// leaseHolder returns the Lease's holder identity ("" when none).
func leaseHolder(env *kit.Env) string {
	l, err := env.Fast.CoordinationV1().Leases(env.Install.Namespace).Get(env.Ctx, leaseName, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func lease(env *kit.Env) *coordinationv1.Lease {
	l, err := env.Fast.CoordinationV1().Leases(env.Install.Namespace).Get(env.Ctx, leaseName, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return l
}

func TestChaos(t *testing.T) {
	n := framework.EnvInt("CHAOS_CONTAINMENTS", 100)
	workers := framework.EnvInt("CHAOS_WORKERS", 10)
	nodes := 4
	cycleTimeout := time.Duration(framework.EnvInt("CHAOS_CYCLE_TIMEOUT_SECONDS", 150)) * time.Second
	env, ws := setup(t, nodes, n)
	mgr, err := env.StartManager("manager", shortLease...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mgr.Stop(10 * time.Second) })
	logf("%d containments and releases, %d at a time, manager SIGKILLed at random instants; kube-apiserver restarted once at the half", n, workers)

	// The killer: once the (re)started manager holds the lease, kill it at
	// a random instant within the next 0.5-6s, restart it after 0-1.5s.
	stop := make(chan struct{})
	var kills, crashStarts atomic.Int64
	var killerWG sync.WaitGroup
	killerWG.Add(1)
	go func() {
		defer killerWG.Done()
		prev := ""
		for {
			// wait for the new process to lead
			for h := leaseHolder(env); h == "" || h == prev; h = leaseHolder(env) {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
			prev = leaseHolder(env)
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(500+rand.IntN(5500)) * time.Millisecond):
			}
			mgr.Kill()
			k := kills.Add(1)
			time.Sleep(time.Duration(rand.IntN(1500)) * time.Millisecond)
			if n, err := mgr.Restart(env.Ctx, 3*time.Minute); err != nil {
				t.Errorf("restarting the manager after kill %d: %v", k, err)
				return
			} else if n > 1 {
				crashStarts.Add(int64(n - 1))
			}
		}
	}()

	var done atomic.Int64
	var apiOnce sync.Once
	var failures atomic.Int64
	t0 := time.Now()
	_ = kit.Parallel(workers, n, func(i int) error {
		if env.Ctx.Err() != nil {
			return env.Ctx.Err()
		}
		if i == n/2 {
			apiOnce.Do(func() {
				d, err := env.RestartAPIServer(true)
				if err != nil {
					t.Errorf("restarting kube-apiserver: %v", err)
					return
				}
				logf("kube-apiserver SIGKILLed and restarted: back in %s", d.Round(10*time.Millisecond))
			})
		}
		if err := cycle(env, i, ws[i], cycleTimeout); err != nil {
			if failures.Add(1) <= 5 {
				t.Errorf("cycle %d: %v", i, err)
			}
			return nil
		}
		if d := done.Add(1); d%10 == 0 {
			logf("  %d/%d contained and released (%d manager kills so far)", d, n, kills.Load())
		}
		return nil
	})
	close(stop)
	killerWG.Wait()
	if !mgr.Alive() {
		if _, err := mgr.Restart(env.Ctx, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	logf("REPORT chaos: %d/%d containments and releases completed in %s with %d manager SIGKILLs and 1 kube-apiserver SIGKILL+restart",
		done.Load(), n, time.Since(t0).Round(time.Second), kills.Load())
	if c := crashStarts.Load(); c > 0 {
		logf("REPORT the manager exited at start %d times (API server unreachable) and was started again, as a kubelet would", c)
	}
	if kills.Load() == 0 {
		t.Error("the manager was never killed")
	}
	checkClean(t, env, ws, n)
	if t.Failed() {
		logf("manager log tail:\n%s", mgr.Logs(6000))
	}
}

// checkClean asserts the end state: every Quarantine Released without its
// finalizer, each action reverted and applied at most once, replica counts
// restored without Bulkhead's annotations, no Bulkhead NetworkPolicy, no
// quarantine label on any pod, no node cordoned, tainted or annotated.
func checkClean(t *testing.T, env *kit.Env, ws []*kit.Workload, n int) {
	t.Helper()
	ctx := env.Ctx
	var qs securityv1alpha1.QuarantineList
	if err := env.Cluster.Client.List(ctx, &qs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(qs.Items) != n {
		t.Errorf("%d Quarantines, want %d", len(qs.Items), n)
	}
	applied := map[string]int{}
	twice, released := 0, 0
	for _, q := range qs.Items {
		if q.Status.Phase == securityv1alpha1.PhaseReleased {
			released++
		}
		if q.Status.Phase != securityv1alpha1.PhaseReleased {
			t.Errorf("Quarantine %s: phase %q, want Released", q.Name, q.Status.Phase)
		}
		if len(q.Finalizers) > 0 {
			t.Errorf("Quarantine %s keeps finalizers %v", q.Name, q.Finalizers)
		}
		for _, a := range q.Status.Actions {
			switch a.State {
			case securityv1alpha1.ActionReverted, securityv1alpha1.ActionRefused:
			default:
				t.Errorf("Quarantine %s: %s is %s (%s), want Reverted (or Refused)", q.Name, a.Type, a.State, a.Message)
			}
		}
		count := map[string]int{}
		for _, e := range q.Status.Audit {
			if e.Event == "Tampered" {
				t.Errorf("Quarantine %s: audit says Tampered (%s): an action was re-applied after a restart", q.Name, e.Message)
			}
			if e.Event == string(securityv1alpha1.ActionApplied) {
				typ, _, _ := strings.Cut(e.Message, " ")
				count[typ]++
				applied[typ]++
			}
		}
		for typ, c := range count {
			if c > 1 {
				twice++
				t.Errorf("Quarantine %s: %s applied %d times", q.Name, typ, c)
			}
		}
	}
	logf("REPORT final phases: %d of %d Quarantines Released; actions applied (audit entries): %v; applied twice: %d", released, len(qs.Items), applied, twice)

	for _, w := range ws[:n] {
		rs, err := env.Fast.AppsV1().ReplicaSets(ns).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("ReplicaSet %s: %v", w.Name, err)
			continue
		}
		if rs.Spec.Replicas == nil || *rs.Spec.Replicas != w.Replicas {
			t.Errorf("ReplicaSet %s: replicas %v, want %d restored", w.Name, rs.Spec.Replicas, w.Replicas)
		}
		for _, k := range []string{containment.HoldersAnnotation, containment.OriginalReplicasAnnotation} {
			if v, ok := rs.Annotations[k]; ok {
				t.Errorf("ReplicaSet %s keeps %s=%q", w.Name, k, v)
			}
		}
	}
	nps, err := env.Fast.NetworkingV1().NetworkPolicies(ns).List(ctx, metav1.ListOptions{LabelSelector: securityv1alpha1.ManagedByLabel + "=" + securityv1alpha1.ManagedByValue})
	if err != nil {
		t.Fatal(err)
	}
	for _, np := range nps.Items {
		t.Errorf("NetworkPolicy %s left behind", np.Name)
	}
	pods, err := env.Fast.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: securityv1alpha1.QuarantineLabel})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		t.Errorf("pod %s/%s keeps the quarantine label %q", p.Namespace, p.Name, p.Labels[securityv1alpha1.QuarantineLabel])
	}
	live, err := env.Fast.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := env.Fast.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range nodes.Items {
		if node.Spec.Unschedulable {
			t.Errorf("node %s left cordoned", node.Name)
		}
		for _, taint := range node.Spec.Taints {
			if taint.Key == securityv1alpha1.QuarantineTaintKey {
				t.Errorf("node %s keeps taint %s", node.Name, taint.Key)
			}
		}
		for _, k := range []string{containment.HoldersAnnotation, containment.WasCordonedAnnotation} {
			if v, ok := node.Annotations[k]; ok {
				t.Errorf("node %s keeps %s=%q", node.Name, k, v)
			}
		}
	}
	logf("REPORT leftovers: checked %d ReplicaSets (replicas restored), %d live pods and all pods for the label, %d nodes for cordon/taint, Bulkhead NetworkPolicies: %d",
		n, len(live.Items), len(nodes.Items), len(nps.Items))
}

// acquired reports whether the manager's log says it took the lease.
func acquired(m *localcluster.Manager) bool {
	return strings.Contains(strings.ToLower(m.Logs(1<<22)), "successfully acquired lease")
}

func TestLeaderElection(t *testing.T) {
	const n = 20
	env, ws := setup(t, 4, n)
	// The shipped timings (15s lease, 2s retry) unless CHAOS_SHORT_LEASE.
	args := []string{"--leader-elect=true"}
	leaseDur, retryPeriod := 15*time.Second, 2*time.Second
	if os.Getenv("CHAOS_SHORT_LEASE") != "" {
		args, leaseDur, retryPeriod = shortLease, 6*time.Second, time.Second
	}
	a, err := env.StartManager("manager-a", args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Stop(10 * time.Second) })
	b, err := env.StartManager("manager-b", args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(10 * time.Second) })
	var holder string
	if err := retry(env.Ctx, time.Minute, "a leader", func() error {
		if holder = leaseHolder(env); holder == "" {
			return fmt.Errorf("no leader yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	leader, follower := a, b
	if !acquired(a) {
		leader, follower = b, a
	}
	if !acquired(leader) || acquired(follower) {
		t.Fatalf("cannot tell the leader from the logs (holder %s)", holder)
	}
	logf("leader %s (%s), follower %s", leader.Name, holder, follower.Name)

	// Half contained under the first leader; the other half created just
	// before it is SIGKILLed, so they are contained across the handover.
	for i := 0; i < n/2; i++ {
		if err := createWith(env, i, ws[i], leaderActionsFor(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n/2; i++ {
		if _, err := waitPhase(env, fmt.Sprintf("q-%d", i), 2*time.Minute, securityv1alpha1.PhaseContained); err != nil {
			t.Fatal(err)
		}
	}
	for i := n / 2; i < n; i++ {
		if err := createWith(env, i, ws[i], leaderActionsFor(i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
	renew := lease(env).Spec.RenewTime
	killed := time.Now()
	leader.Kill()
	var took time.Duration
	for {
		if h := leaseHolder(env); h != "" && h != holder {
			took = time.Since(killed)
			holder = h
			break
		}
		if time.Since(killed) > 3*leaseDur {
			t.Fatalf("no handover %s after killing the leader", time.Since(killed))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// client-go retries every retryPeriod jittered by up to 1.2x more
	// (wait.JitterUntil(retryPeriod, 1.2)), and counts the lease from when
	// the follower last saw it change, itself up to one jittered retry late:
	// the handover is guaranteed within leaseDuration + 2*2.2*retryPeriod.
	// The issue's leaseDuration+retryPeriod is reported, not asserted.
	issueBound := leaseDur + retryPeriod
	bound := leaseDur + time.Duration(2*2.2*float64(retryPeriod))
	logf("REPORT leader election: leader SIGKILLed %s after its last renewal; %s took the lease after %s; leaseDuration+retryPeriod = %s (met: %t); client-go bound leaseDuration+2*2.2*retryPeriod = %s",
		killed.Sub(renew.Time).Round(10*time.Millisecond), follower.Name, took.Round(10*time.Millisecond), issueBound, took <= issueBound, bound)
	if took > bound {
		t.Errorf("handover took %s, more than leaseDuration+2*2.2*retryPeriod %s", took, bound)
	}
	for i := 0; i < n; i++ {
		if _, err := waitPhase(env, fmt.Sprintf("q-%d", i), 2*time.Minute, securityv1alpha1.PhaseContained); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing applied twice: one holder and the true original count on each
	// scaled owner, one Applied per action in each audit.
	for i := 0; i < n; i++ {
		if i%3 == 2 {
			continue
		}
		rs, err := env.Fast.AppsV1().ReplicaSets(ns).Get(env.Ctx, ws[i].Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if h := rs.Annotations[containment.HoldersAnnotation]; h != ns+"/q-"+strconv.Itoa(i) {
			t.Errorf("ReplicaSet %s holders %q, want only %s/q-%d", rs.Name, h, ns, i)
		}
		if o := rs.Annotations[containment.OriginalReplicasAnnotation]; o != strconv.Itoa(replicas) {
			t.Errorf("ReplicaSet %s original replicas recorded as %q, want %d", rs.Name, o, replicas)
		}
		if *rs.Spec.Replicas != 0 {
			t.Errorf("ReplicaSet %s at %d replicas, want 0", rs.Name, *rs.Spec.Replicas)
		}
	}
	// The follower's log shows it started acting only after the kill.
	if !acquired(follower) {
		t.Errorf("%s never logged acquiring the lease", follower.Name)
	}
	// Restart the killed replica: it must stay a follower.
	if err := leader.Start(env.Ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := release(env, fmt.Sprintf("q-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		if _, err := waitPhase(env, fmt.Sprintf("q-%d", i), 2*time.Minute, securityv1alpha1.PhaseReleased); err != nil {
			t.Fatal(err)
		}
	}
	if h := leaseHolder(env); h != holder {
		t.Errorf("lease moved from %s to %s after the old leader came back", holder, h)
	}
	checkClean(t, env, ws, n)
	events, err := env.Fast.CoreV1().Events(ns).List(env.Ctx, metav1.ListOptions{})
	if err == nil {
		tampered := 0
		for _, e := range events.Items {
			if e.Reason == "Tampered" {
				tampered++
			}
		}
		if tampered > 0 {
			t.Errorf("%d Tampered events: something was re-applied", tampered)
		}
	}
}
