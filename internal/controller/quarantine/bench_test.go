package quarantine

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
)

// BenchmarkContainment runs the controller in a manager against envtest,
// creates N Quarantines (Isolate with DNS) at once and measures, per
// Quarantine, creation to phase Contained as seen by a watch. Beside it, the
// raw latency of creating one NetworkPolicy in the same API server.
// BENCH_QUARANTINES sets N (default 50).
func BenchmarkContainment(b *testing.B) {
	n := 50
	if v, err := strconv.Atoi(os.Getenv("BENCH_QUARANTINES")); err == nil && v > 0 {
		n = v
	}
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := startManager(mctx, nil); err != nil {
		b.Fatal(err)
	}

	var lat, raw []time.Duration
	var wall time.Duration
	t := &testing.T{}
	for b.Loop() {
		f := newBenchFixture(b, t, n)
		raw = append(raw, rawNetworkPolicyLatency(b, f.ns, 20)...)
		l, w := containAll(b, f)
		lat, wall = append(lat, l...), wall+w
	}
	slices.Sort(lat)
	slices.Sort(raw)
	b.ReportMetric(ms(pct(lat, 50)), "p50-ms")
	b.ReportMetric(ms(pct(lat, 99)), "p99-ms")
	b.ReportMetric(float64(len(lat))/wall.Seconds(), "quarantines/s")
	b.ReportMetric(ms(pct(raw, 50)), "netpol-create-p50-ms")
	b.ReportMetric(ms(pct(raw, 99)), "netpol-create-p99-ms")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func pct(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	return s[(len(s)-1)*p/100]
}

// newBenchFixture makes a namespace with n pods of one Deployment.
func newBenchFixture(b *testing.B, t *testing.T, n int) *fixture {
	b.Helper()
	f := newFixture(t, int32(n))
	if t.Failed() {
		b.Fatal("fixture failed")
	}
	return f
}

// rawNetworkPolicyLatency creates k NetworkPolicies one by one.
func rawNetworkPolicyLatency(b *testing.B, ns string, k int) []time.Duration {
	out := make([]time.Duration, 0, k)
	for i := range k {
		np := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("raw-%d", i), Namespace: ns},
			Spec:       containment.DesiredNetworkPolicySpec(metav1.LabelSelector{MatchLabels: map[string]string{"raw": strconv.Itoa(i)}}, true),
		}
		start := time.Now()
		if err := direct.Create(ctx, np); err != nil {
			b.Fatal(err)
		}
		out = append(out, time.Since(start))
	}
	return out
}

// containAll creates a Quarantine per pod at once and waits until all are
// Contained, returning per-Quarantine latencies and the wall time.
func containAll(b *testing.B, f *fixture) ([]time.Duration, time.Duration) {
	w, err := direct.Watch(ctx, &securityv1alpha1.QuarantineList{}, client.InNamespace(f.ns))
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	var (
		mu      sync.Mutex
		created = map[string]time.Time{}
		wg      sync.WaitGroup
	)
	start := time.Now()
	for i, p := range f.pods {
		wg.Go(func() {
			name := fmt.Sprintf("bench-%d", i)
			q := &securityv1alpha1.Quarantine{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns},
				Spec:       securityv1alpha1.QuarantineSpec{Target: securityv1alpha1.Target{Name: p.Name}, Actions: []securityv1alpha1.Action{isolateDNS()}},
			}
			t0 := time.Now()
			if err := direct.Create(ctx, q); err != nil {
				b.Error(err)
				return
			}
			mu.Lock()
			created[name] = t0
			mu.Unlock()
		})
	}
	wg.Wait()
	var lat []time.Duration
	seen := map[string]bool{}
	timeout := time.After(5 * time.Minute)
	for len(seen) < len(f.pods) {
		select {
		case ev := <-w.ResultChan():
			q, ok := ev.Object.(*securityv1alpha1.Quarantine)
			if !ok || ev.Type == watch.Deleted || seen[q.Name] || q.Status.Phase != securityv1alpha1.PhaseContained {
				continue
			}
			seen[q.Name] = true
			mu.Lock()
			lat = append(lat, time.Since(created[q.Name]))
			mu.Unlock()
		case <-timeout:
			b.Fatalf("only %d of %d contained", len(seen), len(f.pods))
		}
	}
	return lat, time.Since(start)
}

// startManager runs the controller in a manager until ctx ends.
func startManager(ctx context.Context, onPhase func(context.Context, *securityv1alpha1.Quarantine, securityv1alpha1.QuarantinePhase, securityv1alpha1.QuarantinePhase)) error {
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: direct.Scheme(), Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Controller: config.Controller{SkipNameValidation: new(true)},
	})
	if err != nil {
		return err
	}
	r := &QuarantineReconciler{Client: mgr.GetClient(), Recorder: &recorder{}, ManagerNamespace: securityv1alpha1.DefaultManagerNamespace, OnPhaseChange: onPhase}
	if err := r.SetupWithManager(mgr); err != nil {
		return err
	}
	go func() { _ = mgr.Start(ctx) }()
	mgr.GetCache().WaitForCacheSync(ctx)
	return nil
}
