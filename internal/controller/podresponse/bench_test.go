package podresponse

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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
