package evidence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

func shopPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-1", Namespace: "web", UID: "pod-uid"},
		Spec: corev1.PodSpec{NodeName: "n1", InitContainers: []corev1.Container{{Name: "init"}},
			Containers: []corev1.Container{{Name: "app"}, {Name: "sidecar"}}},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{
			{Name: "app", RestartCount: 4, Ready: false, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "Error"}}},
		}},
	}
}

// TestAddScoresKeepsEveryDetectorAndTheFusion: only the top detector's
// score reached the evidence; every fresh one, its evidence (redacted)
// and each policy's breakdown are kept now.
func TestAddScoresKeepsEveryDetectorAndTheFusion(t *testing.T) {
	now := time.Now()
	fresh := map[string]detector.Entry{
		"falco":    {Score: 0.9, Reason: "shell in container", Evidence: []byte(`{"proc.cmdline":"sh -c mysql -pS3cret","rule":"Terminal shell"}`), Time: now},
		"behavior": {Score: 0.6, Reason: "new binary /tmp/x", Time: now},
		"fraud":    {Score: 0.8, Evidence: []byte(`"` + strings.Repeat("x", MaxDetectorEvidence) + `"`), Time: now},
	}
	tp := &securityv1alpha1.ThreatPolicy{ObjectMeta: metav1.ObjectMeta{Name: "tp"}, Spec: securityv1alpha1.ThreatPolicySpec{
		Detectors: []securityv1alpha1.DetectorWeight{{Name: "falco", Weight: 40}, {Name: "behavior", Weight: 60}, {Name: "tetragon", Weight: 10}}}}
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(tp).Build()
	s := &Sources{Policies: c, Scores: func(ns, pod string) map[string]detector.Entry {
		if ns != "web" || pod != "shop-1" {
			t.Fatalf("scores asked for %s/%s", ns, pod)
		}
		return fresh
	}}
	d := Capture(metav1.Now(), shopPod(), nil, nil)
	s.AddScores(context.Background(), &d, "web", &securityv1alpha1.QuarantineReason{Policies: []string{"tp", "gone"}, Detector: "falco"})
	if len(d.Detectors) != 3 || d.Detectors[0].Detector != "behavior" || d.Detectors[1].Detector != "falco" {
		t.Fatalf("detectors: %+v", d.Detectors)
	}
	ev := string(d.Detectors[1].Evidence)
	if !strings.Contains(ev, "Terminal shell") || strings.Contains(ev, "S3cret") {
		t.Fatalf("falco evidence kept and redacted: %s", ev)
	}
	if d.Detectors[2].Evidence != nil || d.Detectors[2].EvidenceDropped <= MaxDetectorEvidence {
		t.Fatalf("oversized evidence is dropped with its size: %+v", d.Detectors[2])
	}
	if len(d.Fused) != 1 || d.Fused[0].Policy != "tp" || d.Fused[0].Score != "0.72" || d.Fused[0].FreshWeight != 100 || d.Fused[0].TotalWeight != 110 || len(d.Fused[0].Breakdown) != 2 {
		t.Fatalf("fused: %+v", d.Fused)
	}
	if len(d.Notes) != 1 || !strings.Contains(d.Notes[0], "gone") {
		t.Fatalf("a missing policy is noted: %v", d.Notes)
	}
	raw, sum, err := d.Encode()
	if err != nil {
		t.Fatal(err)
	}
	st, err := Status(d, raw, sum, "s")
	if err != nil || len(st.Scores) != 2 || st.Scores[0].Weight == 0 {
		t.Fatalf("status shows the weighted breakdown: %+v %v", st.Scores, err)
	}
}

func eventsClient(t *testing.T, objs ...client.Object) client.Client {
	return fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objs...).
		WithIndex(&corev1.Event{}, "involvedObject.name", func(o client.Object) []string { return []string{o.(*corev1.Event).InvolvedObject.Name} }).
		WithIndex(&corev1.Event{}, "involvedObject.kind", func(o client.Object) []string { return []string{o.(*corev1.Event).InvolvedObject.Kind} }).
		Build()
}

// TestGatherEventsAndLogs: recent Events (bounded, oldest first, other
// pods' left out) and each container's log tail (bounded, redacted); a
// container without a log (kwok has no kubelet) says why.
func TestGatherEventsAndLogs(t *testing.T) {
	pod := shopPod()
	base := time.Now().Add(-time.Hour)
	objs := make([]client.Object, 0, MaxEvents+6)
	for i := range MaxEvents + 5 {
		objs = append(objs, &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("e%d", i), Namespace: "web"},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "shop-1", UID: "pod-uid"},
			Type:           corev1.EventTypeWarning, Reason: "BackOff", Message: fmt.Sprintf("restart %d password=pw%d", i, i),
			LastTimestamp: metav1.NewTime(base.Add(time.Duration(i) * time.Minute)),
		})
	}
	objs = append(objs, &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "old-pod", Namespace: "web"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "shop-1", UID: "earlier-pod"}, Reason: "Other", LastTimestamp: metav1.NewTime(base.Add(2 * time.Hour))})
	logs := func(_ context.Context, ns, p, container string, tailLines, limitBytes int64) ([]byte, error) {
		if ns != "web" || p != "shop-1" || tailLines != MaxLogLines || limitBytes > MaxLogBytes {
			return nil, fmt.Errorf("bad request %s/%s %d %d", ns, p, tailLines, limitBytes)
		}
		switch container {
		case "app":
			var b strings.Builder
			for i := range 2 * MaxLogLines {
				fmt.Fprintf(&b, "line %d connecting to postgres://app:dbpw@db/shop\n", i)
			}
			return []byte(b.String()), nil
		case "sidecar":
			return nil, errors.New("no preferred addresses found; known addresses: []")
		}
		return nil, nil
	}
	s := &Sources{Events: eventsClient(t, objs...), Logs: logs}
	d := Capture(metav1.Now(), pod, nil, nil)
	s.Gather(context.Background(), pod).Wait(context.Background(), &d)
	if len(d.Events) != MaxEvents || d.Events[0].Message != "restart 5 password=REDACTED" || d.Events[MaxEvents-1].Message != "restart 24 password=REDACTED" {
		t.Fatalf("events: %d first %+v", len(d.Events), d.Events[0])
	}
	if len(d.Logs) != 3 || d.Logs[0].Container != "init" || d.Logs[0].Unavailable != "empty" {
		t.Fatalf("logs: %+v", d.Logs)
	}
	app := d.Logs[1]
	if len(app.Lines) != MaxLogLines || !app.Truncated || strings.Contains(strings.Join(app.Lines, "\n"), "dbpw") || !strings.HasPrefix(app.Lines[MaxLogLines-1], "line 99 ") {
		t.Fatalf("app log: %d lines, truncated %v, last %q", len(app.Lines), app.Truncated, app.Lines[len(app.Lines)-1])
	}
	if d.Logs[2].Lines != nil || !strings.Contains(d.Logs[2].Unavailable, "no preferred addresses") {
		t.Fatalf("a container without a log says why: %+v", d.Logs[2])
	}
	if len(d.Containers) != 1 || d.Containers[0].RestartCount != 4 || !strings.Contains(d.Containers[0].State, "CrashLoopBackOff") || !strings.Contains(d.Containers[0].LastState, "exit code 137") {
		t.Fatalf("containers: %+v", d.Containers)
	}
}

// TestGatherIsBounded: a log reader that hangs costs at most the timeout.
func TestGatherIsBounded(t *testing.T) {
	hang := func(ctx context.Context, _, _, _ string, _, _ int64) ([]byte, error) {
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond) // returns late, after the gatherer gave up
		return []byte("late"), ctx.Err()
	}
	s := &Sources{Logs: hang, Timeout: 50 * time.Millisecond}
	d := Capture(metav1.Now(), shopPod(), nil, nil)
	s.Gather(context.Background(), shopPod()).Wait(context.Background(), &d)
	if len(d.Logs) != 3 || d.Logs[1].Unavailable == "" {
		t.Fatalf("%+v", d.Logs)
	}
	// Without sources nothing is gathered, and nothing waits.
	var none *Sources
	d = Capture(metav1.Now(), shopPod(), nil, nil)
	none.Gather(context.Background(), shopPod()).Wait(context.Background(), &d)
	if d.Logs != nil || d.Events != nil {
		t.Fatal("nothing to gather")
	}
}

// TestEncodeDropsLogsBeforeThePodSpec keeps a document that would overflow
// the Secret within it, giving up logs first.
func TestEncodeDropsLogsBeforeThePodSpec(t *testing.T) {
	d := Capture(metav1.Now(), shopPod(), nil, nil)
	for range maxLoggedContainers * 2 {
		d.Logs = append(d.Logs, ContainerLog{Container: "c", Lines: []string{strings.Repeat("x", MaxDocumentLen/maxLoggedContainers)}})
	}
	raw, _, err := d.Encode()
	if err != nil || len(raw) > MaxDocumentLen || d.Logs != nil || d.PodSpec == nil {
		t.Fatalf("%d bytes, logs %d, spec %v, %v", len(raw), len(d.Logs), d.PodSpec != nil, err)
	}
	var back Document
	if err := json.Unmarshal(raw, &back); err != nil || back.Trimmed[0] != "logs dropped" {
		t.Fatalf("%v %v", back.Trimmed, err)
	}
}
