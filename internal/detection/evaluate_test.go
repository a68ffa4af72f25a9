package detection

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/exposure"
	"github.com/bulkhead-dev/bulkhead/test/framework/testenv"
)

// activity records which policy evaluated which detector.
type activity struct {
	mu  sync.Mutex
	got []string
}

func (a *activity) Evaluated(_ context.Context, policy, det string, _ time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got = append(a.got, policy+"/"+det)
}

func (a *activity) has(policy, det string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Contains(a.got, policy+"/"+det)
}

// shop is the pod web/shop-1 (app=shop) and its namespace.
func shop() []client.Object {
	return []client.Object{
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "shop-1", UID: "u1", Labels: map[string]string{"app": "shop"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "web"}},
	}
}

// fakeEvaluator evaluates against a fake client holding objs: no cluster.
func fakeEvaluator(t *testing.T, act Activity, objs ...client.Object) *Evaluator {
	t.Helper()
	c := fake.NewClientBuilder().WithScheme(testenv.Scheme).WithObjects(objs...).Build()
	assessor, err := exposure.NewAssessor(nil)
	if err != nil {
		t.Fatal(err)
	}
	return NewEvaluator(NewStore(time.Minute, 10), c, assessor, NewTriggers(), act)
}

// falcoPolicy covers app=shop, weighs falco alone and isolates at 0.8.
func falcoPolicy(name string, scoring securityv1alpha1.Scoring) *securityv1alpha1.ThreatPolicy {
	return &securityv1alpha1.ThreatPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: securityv1alpha1.ThreatPolicySpec{
		Mode: securityv1alpha1.ModeEnforce, Selector: securityv1alpha1.PodSelection{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}}},
		Detectors: []securityv1alpha1.DetectorWeight{{Name: "falco", Weight: 1}},
		Scoring:   scoring,
		Response:  []securityv1alpha1.ResponseStep{{MinScore: "0.8", Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}}}},
	}}
}

// TestEvaluatorStreaks checks, without a cluster, that each signal is one
// evaluation, that a lower score resets the streak, that a trigger waits
// for a decision even if a lower score follows, and that only policies
// weighing the signal's detector and selecting the pod are evaluated.
func TestEvaluatorStreaks(t *testing.T) {
	sustain3 := falcoPolicy("a", securityv1alpha1.Scoring{Threshold: "0.8", Sustain: 3})
	otherPods := sustain3.DeepCopy()
	otherPods.Name = "b"
	otherPods.Spec.Selector.PodSelector.MatchLabels["app"] = "db"
	otherDetector := sustain3.DeepCopy()
	otherDetector.Name = "c"
	otherDetector.Spec.Detectors[0].Name = "my-model"

	seen := &activity{}
	e := fakeEvaluator(t, seen, append(shop(), sustain3, otherPods, otherDetector)...)
	ctx := context.Background()
	key := PodKey{Namespace: "web", Pod: "shop-1"}
	record := func(score float64) {
		t.Helper()
		if err := e.Record(ctx, []detector.Signal{{Namespace: "web", Pod: "shop-1", Detector: "falco", Score: score}}); err != nil {
			t.Fatal(err)
		}
	}
	streak := func() int {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.evals[key]["a"].Streak
	}

	for i, s := range []float64{0.9, 0.9, 0.5, 0.9, 0.9} {
		record(s)
		if got := e.Triggers.Take(key); len(got) != 0 {
			t.Fatalf("signal %d triggered %v before sustain 3", i, got)
		}
	}
	if streak() != 2 {
		t.Errorf("streak %d, want 2 (reset by 0.5)", streak())
	}
	record(0.95)
	record(0.1) // falls before the decision: the trigger stays
	got := e.Triggers.Take(key)
	if len(got) != 1 || got["a"].Result.Score != 0.95 || got["a"].Streak != 3 {
		t.Fatalf("triggered %+v, want policy a at 0.95 with streak 3", got)
	}
	if again := e.Triggers.Take(key); len(again) != 0 {
		t.Errorf("a trigger was decided twice: %v", again)
	}
	e.mu.Lock()
	_, b := e.evals[key]["b"]
	_, c2 := e.evals[key]["c"]
	e.mu.Unlock()
	if b || c2 {
		t.Errorf("evaluated a policy that does not select the pod (%v) or weigh falco (%v)", b, c2)
	}
	if !seen.has("a", "falco") {
		t.Errorf("no last signal time: %+v", seen.got)
	}
	// One batch with a high score between low ones of the same pod (a
	// sensor's buffered request): each is evaluated as it was, in order.
	for range 2 {
		record(0.9)
	}
	if err := e.Record(ctx, []detector.Signal{
		{Namespace: "web", Pod: "shop-1", Detector: "falco", Score: 0.9},
		{Namespace: "web", Pod: "shop-1", Detector: "falco", Score: 0.0},
	}); err != nil {
		t.Fatal(err)
	}
	if got := e.Triggers.Take(key); len(got) != 1 || got["a"].Result.Score != 0.9 {
		t.Fatalf("the high score inside a batch was lost: %+v", got)
	}
	e.ForgetPolicy("a")
	e.mu.Lock()
	_, kept := e.evals[key]["a"]
	e.mu.Unlock()
	if kept {
		t.Error("ForgetPolicy kept the policy's evaluation")
	}
	e.Forget(key, "u1")
	if e.Store.Len() != 0 {
		t.Error("Forget kept the pod's scores")
	}
}

// A streak that waits out sustainFor triggers when it is due even if no
// further signal comes (a sensor sends only when its score changes), and
// not when the score fell meanwhile.
func TestSustainForTriggersWithoutAnotherSignal(t *testing.T) {
	p := falcoPolicy("a", securityv1alpha1.Scoring{Threshold: "0.8", Sustain: 1, SustainFor: &metav1.Duration{Duration: 300 * time.Millisecond}})
	e := fakeEvaluator(t, nil, append(shop(), p)...)
	ctx := context.Background()
	key := PodKey{Namespace: "web", Pod: "shop-1"}
	record := func(score float64) {
		t.Helper()
		if err := e.Record(ctx, []detector.Signal{{Namespace: "web", Pod: "shop-1", Detector: "falco", Score: score}}); err != nil {
			t.Fatal(err)
		}
	}

	record(0.9)
	if got := e.Triggers.Take(key); len(got) != 0 {
		t.Fatalf("triggered before sustainFor: %v", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := e.Triggers.Take(key)
		if len(got) == 1 && got["a"].Result.Score == 0.9 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the streak never triggered after sustainFor without another signal")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-e.Triggers.Pods:
	default:
		t.Fatal("the decision was not woken")
	}

	// A fall before it is due breaks the streak: nothing triggers.
	e.Forget(key, "u1")
	record(0.9)
	record(0.1)
	time.Sleep(600 * time.Millisecond)
	if got := e.Triggers.Take(key); len(got) != 0 {
		t.Fatalf("triggered although the score fell before sustainFor: %v", got)
	}
}
