package handover

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/exposure"
	"github.com/bulkhead-dev/bulkhead/internal/ingest"
	"github.com/bulkhead-dev/bulkhead/test/framework/testenv"
)

// replica is one manager's in-memory detection state.
type replica struct {
	eval    *detection.Evaluator
	handler *ingest.Handler
	keeper  *Keeper
}

func newReplica(t *testing.T, c client.Client) *replica {
	t.Helper()
	assessor, err := exposure.NewAssessor(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{eval: detection.NewEvaluator(detection.NewStore(time.Minute, 100), c, assessor, detection.NewTriggers(), nil)}
	r.eval.Registry = detection.NewRegistry()
	r.handler = ingest.NewHandler(ingest.Config{})
	r.keeper = &Keeper{Client: c, Namespace: "bulkhead-system", Holder: Holder{Evaluator: r.eval, Handler: r.handler}}
	return r
}

// Issue 15 item 1: a new leader started with empty memory, so a policy
// with sustain 2 whose first signal reached the old leader needed two more
// signals after a failover. The successor now carries on the streak, the
// fresh score and the external detector's name; stale scores are dropped.
func TestFailoverKeepsStreakAndScores(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "shop-1", UID: "u1", Labels: map[string]string{"app": "shop"}}}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	p := &securityv1alpha1.ThreatPolicy{ObjectMeta: metav1.ObjectMeta{Name: "sustain2"}, Spec: securityv1alpha1.ThreatPolicySpec{
		Mode: securityv1alpha1.ModeEnforce, Selector: securityv1alpha1.PodSelection{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}}},
		Detectors: []securityv1alpha1.DetectorWeight{{Name: "my-model", Weight: 1}},
		Scoring:   securityv1alpha1.Scoring{Threshold: "0.8", Sustain: 2},
		Response:  []securityv1alpha1.ResponseStep{{MinScore: "0.8", Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}}}},
	}}
	c := fake.NewClientBuilder().WithScheme(testenv.Scheme).WithObjects(pod, ns, p).Build()
	ctx := context.Background()
	key := detection.PodKey{Namespace: "web", Pod: "shop-1"}
	signal := []detector.Signal{{Namespace: "web", Pod: "shop-1", Detector: "my-model", Score: 0.9}}

	old := newReplica(t, c)
	old.keeper.Load(ctx) // nothing saved yet
	if err := old.eval.Registry.Learn("my-model"); err != nil {
		t.Fatal(err)
	}
	if err := old.eval.Record(ctx, signal); err != nil {
		t.Fatal(err)
	}
	if got := old.eval.Triggers.Take(key); len(got) != 0 {
		t.Fatalf("the first signal triggered sustain 2: %v", got)
	}
	// A stale score (older than the TTL) in the saved state is not loaded.
	st := old.keeper.Holder.Snapshot()
	st.Detection.Scores = append(st.Detection.Scores, detection.SavedScore{Namespace: "web", Pod: "gone", Detector: "falco", Score: 1, Time: time.Now().Add(-2 * time.Minute)})
	b, err := Encode(st)
	if err != nil {
		t.Fatal(err)
	}
	old.keeper.last = nil
	if err := old.keeper.Save(ctx); err != nil {
		t.Fatal(err)
	}
	// Overwrite with the stale entry added (what Save wrote plus it).
	var sec corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: "bulkhead-system", Name: SecretName}, &sec); err != nil {
		t.Fatal(err)
	}
	sec.Data[Key] = b
	if err := c.Update(ctx, &sec); err != nil {
		t.Fatal(err)
	}

	next := newReplica(t, c)
	next.keeper.Load(ctx)
	if !next.eval.Registry.Known("my-model") {
		t.Error("the external detector's name was lost")
	}
	if fresh := next.eval.Store.Fresh(key); fresh["my-model"].Score != 0.9 {
		t.Errorf("fresh scores after failover %v, want my-model 0.9", fresh)
	}
	if fresh := next.eval.Store.Fresh(detection.PodKey{Namespace: "web", Pod: "gone"}); len(fresh) != 0 {
		t.Errorf("a score older than the TTL was loaded: %v", fresh)
	}
	if err := next.eval.Record(ctx, signal); err != nil {
		t.Fatal(err)
	}
	got := next.eval.Triggers.Take(key)
	if ev := got["sustain2"]; ev.Streak != 2 {
		t.Fatalf("the second signal through the new leader: %+v, want a trigger with streak 2", got)
	}
}

// Bad input changes nothing: a corrupt Secret leaves the replica empty and
// ingestion still starts (Load returns).
func TestCorruptStateIsIgnored(t *testing.T) {
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "bulkhead-system", Name: SecretName}, Data: map[string][]byte{Key: []byte("not gzip")}}
	c := fake.NewClientBuilder().WithScheme(testenv.Scheme).WithObjects(sec).Build()
	r := newReplica(t, c)
	r.keeper.Load(context.Background())
	if s := r.keeper.Holder.Snapshot(); len(s.Detection.Scores)+len(s.Detection.Streaks)+len(s.Replay) != 0 {
		t.Errorf("state from a corrupt Secret: %+v", s)
	}
	if _, err := Decode(nil); err == nil {
		t.Error("empty state decoded")
	}
}

// The saved state stays within MaxBytes however much the leader holds.
func TestEncodeIsBounded(t *testing.T) {
	var s State
	for i := range MaxEntries {
		s.Detection.Scores = append(s.Detection.Scores, detection.SavedScore{Namespace: "ns", Pod: string(rune('a'+i%26)) + time.Duration(i).String(),
			Detector: "falco", Score: 0.5, Reason: random(100), Time: time.Now()})
		s.Replay = append(s.Replay, ingest.ReplayID{Hash: time.Duration(i * 7919).String(), At: int64(i)})
	}
	b, err := Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxBytes {
		t.Fatalf("%d bytes, want ≤ %d", len(b), MaxBytes)
	}
	back, err := Decode(b)
	if err != nil || len(back.Detection.Scores) == 0 || len(back.Detection.Scores) == MaxEntries {
		t.Fatalf("decoded %d scores (%v), want some but fewer than %d", len(back.Detection.Scores), err, MaxEntries)
	}
}

// random is n random bytes in hex: reasons that do not compress away.
func random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// A leader stopping cleanly saves once more before it releases the lease,
// so a graceful handover loses nothing; unchanged state is not rewritten.
func TestSavedOnShutdown(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(testenv.Scheme).Build()
	r := newReplica(t, c)
	r.keeper.Interval = time.Hour // only the final save can write
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.keeper.Save(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "bulkhead-system", Name: SecretName}, &corev1.Secret{}); err == nil {
		t.Fatal("saved before Load: an empty state would overwrite the predecessor's")
	}
	r.keeper.Load(ctx)
	done := make(chan error, 1)
	go func() { done <- r.keeper.Start(ctx) }()
	if err := r.eval.Registry.Learn("late-model"); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "bulkhead-system", Name: SecretName}, &sec); err != nil {
		t.Fatalf("nothing saved at shutdown: %v", err)
	}
	st, err := Decode(sec.Data[Key])
	if err != nil || len(st.Detection.Detectors) != 1 || st.Detection.Detectors[0] != "late-model" {
		t.Fatalf("saved %+v (%v), want the detector learned last", st.Detection, err)
	}
	rv := sec.ResourceVersion
	if err := r.keeper.Save(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "bulkhead-system", Name: SecretName}, &sec); err != nil || sec.ResourceVersion != rv {
		t.Errorf("an unchanged state was written again (resourceVersion %s → %s, %v)", rv, sec.ResourceVersion, err)
	}
}
