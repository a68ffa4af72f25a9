package podresponse

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// BenchmarkIngestAndScore measures one scored event through the ingestion
// handler (auth, rate limit, decode, pod lookup in the manager's cache) and
// the evaluator (store, selection, fusion with Pod Security exposure, streak),
// without the network. Run with -cpu 1 for events per second on one core:
// 1e9 / ns/op.
func BenchmarkIngestAndScore(b *testing.B) {
	ns := newNamespace(b, "shop-1")
	newPolicy(b, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Detectors = []securityv1alpha1.DetectorWeight{{Name: "falco", Weight: 40}, {Name: "my-model", Weight: 60}}
		s.Scoring.Exposure.Misconfiguration = true
	})
	body := fmt.Sprintf(`{"namespace":%q,"pod":"shop-1","detector":"my-model","score":0.4}`, ns)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/v1/scores", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		ingestHandler.ServeHTTP(w, req)
		if w.Code != http.StatusAccepted {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkScoreToQuarantine measures the latency from an accepted score
// (the HTTPS answer) to the Quarantine readable from the API server.
func BenchmarkScoreToQuarantine(b *testing.B) {
	ns := newNamespace(b)
	newPolicy(b, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Safeguards.MaxActiveQuarantines = 10000
	})
	ctx := context.Background()
	var total time.Duration
	i := 0
	for b.Loop() {
		b.StopTimer()
		pod := fmt.Sprintf("p%d", i)
		i++
		newPod(b, ns, pod)
		b.StartTimer()
		start := time.Now()
		postFalco(b, ns, pod, "Critical")
		q := &securityv1alpha1.Quarantine{}
		for {
			err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: pod}, q)
			if err == nil {
				break
			}
			if client.IgnoreNotFound(err) != nil {
				b.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
		total += time.Since(start)
		b.StopTimer()
		// Released, it no longer counts against the cluster-wide cap.
		patch := client.MergeFrom(q.DeepCopy())
		released := true
		q.Spec.Released = &released
		if err := k8s.Patch(ctx, q, patch); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(i), "ms/quarantine")
}

// BenchmarkBurstScoreToQuarantine measures, for a burst of pods scored in
// one request, the time from the request to each pod's Quarantine seen
// created (a watch): the decision leg of make bench's simultaneous threats,
// without the containment that competes there for the API server. 96 pods in
// 4 namespaces: the suite's cluster-wide cap is 100, half per namespace.
func BenchmarkBurstScoreToQuarantine(b *testing.B) {
	const spaces, per = 4, 24
	var lat []time.Duration
	round := 0
	for b.Loop() {
		b.StopTimer()
		round++
		scores := make([]map[string]any, 0, spaces*per)
		nss := make([]string, 0, spaces)
		for s := range spaces {
			pods := make([]string, per)
			for i := range pods {
				pods[i] = fmt.Sprintf("b%d-%d-%d", round, s, i)
			}
			var ns string
			if s == 0 {
				ns = newNamespace(b, pods...)
			} else {
				// Selected by the first namespace's policy (its label).
				ns = fmt.Sprintf("%s-%d", nss[0], s)
				if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"test": nss[0]}}}); err != nil {
					b.Fatal(err)
				}
				for _, p := range pods {
					newPod(b, ns, p)
				}
			}
			nss = append(nss, ns)
			for _, p := range pods {
				scores = append(scores, map[string]any{"namespace": ns, "pod": p, "detector": "my-model", "score": 0.99})
			}
		}
		newPolicy(b, nss[0], securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
			s.Detectors = []securityv1alpha1.DetectorWeight{{Name: "my-model", Weight: 1}}
			s.Safeguards.MaxActiveQuarantines = 10000
		})
		body, _ := json.Marshal(scores)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		w := resumableWatch(ctx, b, securityv1alpha1.PolicyLabel+"="+nss[0]+"-enforce")
		b.StartTimer()
		start := time.Now()
		post(b, "/v1/scores", "application/json", body, nil, http.StatusAccepted)
		seen := 0
		for ev := range w.ResultChan() {
			if ev.Type != watch.Added {
				continue
			}
			lat = append(lat, time.Since(start))
			if seen++; seen == len(scores) {
				break
			}
		}
		b.StopTimer()
		w.Stop()
		cancel()
		if seen != len(scores) {
			b.Fatalf("%d of %d Quarantines seen", seen, len(scores))
		}
		// Released, they stop counting against the suite's cluster-wide cap.
		for _, ns := range nss {
			releaseAll(b, ns)
		}
		b.StartTimer()
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// resumableWatch watches the Quarantines with the label selector from now
// on, resuming where it stopped when the API server ends the watch (it ends
// one that falls behind a burst on a busy machine).
func resumableWatch(ctx context.Context, b *testing.B, selector string) watch.Interface {
	var l securityv1alpha1.QuarantineList
	if err := watcher.List(ctx, &l, &client.ListOptions{Raw: &metav1.ListOptions{LabelSelector: selector, Limit: 1}}); err != nil {
		b.Fatal(err)
	}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, l.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return watcher.Watch(ctx, &securityv1alpha1.QuarantineList{}, &client.ListOptions{Raw: &o})
		}})
	if err != nil {
		b.Fatal(err)
	}
	return w
}
