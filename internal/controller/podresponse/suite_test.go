package podresponse

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/controller/threatpolicy"
	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/exposure"
	"github.com/bulkhead-dev/bulkhead/internal/ingest"
	"github.com/bulkhead-dev/bulkhead/internal/podcache"
	"github.com/bulkhead-dev/bulkhead/internal/provenance"
	"github.com/bulkhead-dev/bulkhead/test/framework/testenv"
)

const (
	managerNS = "bulkhead-system"
	token     = "suite-token"
)

var (
	// keys signs the Quarantines the manager makes (internal/provenance).
	keys *provenance.Keyring
	k8s  client.Client
	// watcher watches what the suite's decider writes (benchmarks).
	watcher   client.WithWatch
	ingestURL string
	httpc     = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the suite's server is self-signed
	evaluator     *detection.Evaluator
	ingestHandler *ingest.Handler
	// decider is the suite's per-pod controller (tests wait on what its
	// caches see).
	decider *Reconciler
	nsCount atomic.Int32
)

// syscallModel stands in for the behavior model: a run with ptrace scores 0.95.
type syscallModel struct{}

func (syscallModel) ObserveBehavior(_ context.Context, evs []detector.BehaviorEvent) ([]detector.Signal, error) {
	out := make([]detector.Signal, 0, len(evs))
	for _, e := range evs {
		s := 0.1
		if strings.Contains(strings.Join(e.Syscalls, " "), "ptrace") {
			s = 0.95
		}
		out = append(out, detector.Signal{Namespace: e.Namespace, Pod: e.Pod, Detector: detector.Behavior, Score: s, Reason: "syscalls"})
	}
	return out, nil
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	logTo := io.Discard
	if os.Getenv("TEST_LOG") != "" {
		logTo = os.Stderr
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(logTo)))
	env, err := testenv.Start(testenv.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	k8s = env.Client
	if watcher, err = client.NewWithWatch(env.Config, client.Options{Scheme: testenv.Scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Trivy Operator's API is served, so exposure watches its reports.
	if err := installTrivyCRD(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The manager's own cache options: the suite runs against trimmed pods.
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: testenv.Scheme, Cache: podcache.CacheOptions(), Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pipeline, err := setup(mgr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, _ := os.MkdirTemp("", "bulkhead-ingest")
	defer func() { _ = os.RemoveAll(dir) }()
	tokens := filepath.Join(dir, "tokens")
	_ = os.WriteFile(tokens, []byte(token+" name=suite detectors=falco,tetragon,alertmanager,behavior,my-model,other-model train=true\n"), 0o600)
	auth, err := ingest.NewAuthenticator(tokens, logr.Discard())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ingestHandler = ingest.NewHandler(ingest.Config{Auth: auth, Detection: pipeline, Pods: mgr.GetClient(), Rate: 1e6, Burst: 1e6})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ingestURL = "https://" + ln.Addr().String()
	go func() { _ = (&ingest.Server{Handler: ingestHandler}).Serve(ctx, ln) }()
	go func() {
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		fmt.Fprintln(os.Stderr, "cache did not sync")
		return 1
	}
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: managerNS}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// setup wires detection, the per-pod decision and the policy status as
// cmd/bulkhead does, with a stand-in behavior model.
func setup(mgr ctrl.Manager) (*detection.Pipeline, error) {
	// The real key Secret, created on first use as in a cluster.
	keys = &provenance.Keyring{Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(), Namespace: managerNS}
	store := detection.NewStore(5*time.Minute, 0)
	if err := mgr.Add(store); err != nil {
		return nil, err
	}
	assessor, err := exposure.NewAssessor(&exposure.LazyReports{Mapper: mgr.GetRESTMapper(), Reader: mgr.GetClient()})
	if err != nil {
		return nil, err
	}
	activity := threatpolicy.NewActivity()
	triggers := detection.NewTriggers()
	evaluator = detection.NewEvaluator(store, mgr.GetClient(), assessor, triggers, activity)
	if err := mgr.Add(&detection.PodDeletions{Cache: mgr.GetCache(), Evaluator: evaluator}); err != nil {
		return nil, err
	}
	registry := detection.NewRegistry()
	recorder := mgr.GetEventRecorder("bulkhead")
	decider = &Reconciler{
		Client: gatedClient{mgr.GetClient()}, APIReader: mgr.GetAPIReader(), Triggers: triggers, Evaluator: evaluator, Activity: activity,
		Recorder: recorder, ManagerNamespace: managerNS, MaxActive: 100, Provenance: keys,
		Handoff: handoffs,
	}
	if err := decider.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := (&threatpolicy.ThreatPolicyReconciler{Client: mgr.GetClient(), Activity: activity, Detectors: registry, Provenance: keys,
		Evaluations: evaluator, Recorder: recorder}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	return &detection.Pipeline{Registry: registry, Model: syscallModel{}, Recorder: evaluator}, nil
}

// createGate, when set, runs before each Quarantine create of the suite's
// decider (tests that hold creates back).
var createGate atomic.Pointer[func(*securityv1alpha1.Quarantine)]

// gatedClient is the decider's client with createGate in front of creates.
type gatedClient struct{ client.Client }

func (c gatedClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if q, ok := obj.(*securityv1alpha1.Quarantine); ok {
		if gate := createGate.Load(); gate != nil {
			(*gate)(q)
		}
	}
	return c.Client.Create(ctx, obj, opts...)
}

// newNamespace makes a namespace labelled for one test's policy.
func newNamespace(t testing.TB, pods ...string) string {
	t.Helper()
	name := fmt.Sprintf("t%d", nsCount.Add(1))
	t.Logf("namespace %s", name)
	ctx := context.Background()
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"test": name}}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		newPod(t, name, p)
	}
	return name
}

func newPod(t testing.TB, ns, name string) *corev1.Pod {
	t.Helper()
	return createPod(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "shop"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx"}}}})
}

// createPod creates pod and waits until the manager's cache has it.
func createPod(t testing.TB, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	if err := k8s.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	// The ingestion server reads pods from the manager's cache.
	eventually(t, func() error {
		return evaluator.Reader.Get(context.Background(), client.ObjectKeyFromObject(pod), &corev1.Pod{})
	})
	return pod
}

// newPolicy creates a policy selecting namespace ns, with detectors falco
// (1) unless mut changes it, threshold 0.8, ladder Isolate@0.8 and
// ScaleToZero+CordonNode@0.95.
func newPolicy(t testing.TB, ns string, mode securityv1alpha1.PolicyMode, mut ...func(*securityv1alpha1.ThreatPolicySpec)) *securityv1alpha1.ThreatPolicy {
	t.Helper()
	p := &securityv1alpha1.ThreatPolicy{ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + strings.ToLower(string(mode))},
		Spec: securityv1alpha1.ThreatPolicySpec{
			Mode: mode,
			Selector: securityv1alpha1.PodSelection{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"test": ns}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}},
			},
			Detectors: []securityv1alpha1.DetectorWeight{{Name: "falco", Weight: 1}},
			Scoring:   securityv1alpha1.Scoring{Threshold: "0.8", Sustain: 1},
			Response: []securityv1alpha1.ResponseStep{
				{MinScore: "0.8", Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate, Isolate: &securityv1alpha1.IsolateParams{AllowDNS: true}}}},
				{MinScore: "0.95", Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionScaleToZero}, {Type: securityv1alpha1.ActionCordonNode}}},
			},
		}}
	for _, m := range mut {
		m(&p.Spec)
	}
	if len(p.Name) > 253 {
		p.Name = p.Name[:253]
	}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	// The evaluator reads policies from the cache.
	eventually(t, func() error {
		return evaluator.Reader.Get(context.Background(), client.ObjectKeyFromObject(p), &securityv1alpha1.ThreatPolicy{})
	})
	return p
}

// post sends body to an ingestion path and requires want.
func post(t testing.TB, path, contentType string, body []byte, header map[string]string, want int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ingestURL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", contentType)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("POST %s: %d %s, want %d", path, resp.StatusCode, b, want)
	}
}

func postScore(t testing.TB, ns, pod, det string, score float64) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"namespace": ns, "pod": pod, "detector": det, "score": score})
	post(t, "/v1/scores", "application/json", b, nil, http.StatusAccepted)
}

// postFalco posts a Falco event of the given priority about ns/pod.
func postFalco(t testing.TB, ns, pod, priority string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"rule": "Terminal shell in container", "priority": priority, "output": "shell in " + pod,
		"output_fields": map[string]any{"k8s.ns.name": ns, "k8s.pod.name": pod}})
	post(t, "/v1/falco", "application/json", b, nil, http.StatusAccepted)
}

func quarantines(t testing.TB, ns string) []securityv1alpha1.Quarantine {
	t.Helper()
	var l securityv1alpha1.QuarantineList
	if err := k8s.List(context.Background(), &l, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// onlyQuarantine waits until ns holds exactly one Quarantine that check accepts.
func onlyQuarantine(t testing.TB, ns string, check func(q *securityv1alpha1.Quarantine) error) *securityv1alpha1.Quarantine {
	t.Helper()
	var q *securityv1alpha1.Quarantine
	eventually(t, func() error {
		qs := quarantines(t, ns)
		if len(qs) != 1 {
			return fmt.Errorf("%d Quarantines in %s", len(qs), ns)
		}
		q = &qs[0]
		return check(q)
	})
	return q
}

// never requires that ns holds no Quarantine for a while.
func never(t testing.TB, ns string) {
	t.Helper()
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if qs := quarantines(t, ns); len(qs) != 0 {
			t.Fatalf("unexpected Quarantine %s: %+v", qs[0].Name, qs[0].Spec)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func policyStatus(t testing.TB, name string, check func(st *securityv1alpha1.ThreatPolicy) error) {
	t.Helper()
	eventually(t, func() error {
		p := &securityv1alpha1.ThreatPolicy{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, p); err != nil {
			return err
		}
		return check(p)
	})
}

func eventually(t testing.TB, f func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out: %v", err)
}

func actionTypes(q *securityv1alpha1.Quarantine) string {
	s := make([]string, 0, len(q.Spec.Actions))
	for _, a := range q.Spec.Actions {
		s = append(s, string(a.Type))
	}
	return strings.Join(s, ",")
}

func installTrivyCRD(ctx context.Context) error {
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "vulnerabilityreports.aquasecurity.github.io"},
		"spec": map[string]any{
			"group": "aquasecurity.github.io", "scope": "Namespaced",
			"names": map[string]any{"plural": "vulnerabilityreports", "singular": "vulnerabilityreport", "kind": "VulnerabilityReport", "listKind": "VulnerabilityReportList"},
			"versions": []any{map[string]any{"name": "v1alpha1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
		},
	}}
	if err := k8s.Create(ctx, crd); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var l unstructured.UnstructuredList
		l.SetGroupVersionKind(exposure.VulnerabilityReportGVK.GroupVersion().WithKind("VulnerabilityReportList"))
		if err := k8s.List(ctx, &l); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("VulnerabilityReport CRD not served")
}
