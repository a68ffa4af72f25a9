package plugin

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/test/framework/testenv"
)

var (
	// admin sets up fixtures; the commands run as the user "alice" through
	// their own kubeconfig, so the actor they record can be checked.
	admin      client.Client
	kubeconfig string
	env        *testenv.Env
)

const user = "alice"

func TestMain(m *testing.M) {
	os.Exit(func() int {
		var err error
		env, err = testenv.Start(testenv.Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer func() { _ = env.Stop() }()
		admin = env.Client
		u, err := env.AddUser(envtest.User{Name: user, Groups: []string{"system:masters"}}, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		kc, err := u.KubeConfig()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		dir, err := os.MkdirTemp("", "kubectl-bulkhead-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer func() { _ = os.RemoveAll(dir) }()
		kubeconfig = filepath.Join(dir, "kubeconfig")
		if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}())
}

// run executes kubectl-bulkhead as alice with args, answering prompts with stdin.
func run(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return runAs(t, kubeconfig, stdin, args...)
}

func runAs(t *testing.T, kubeconfig, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := NewCommand(genericiooptions.IOStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut})
	cmd.SetArgs(append(args, "--kubeconfig", kubeconfig, "--cache-dir", t.TempDir()))
	err = cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := run(t, "", args...)
	if err != nil {
		t.Fatalf("kubectl bulkhead %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func namespace(t *testing.T, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "plugin-", Labels: labels}}
	if err := admin.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// quarantine creates a Quarantine of pod target and then writes status, as
// the controller would.
func quarantine(t *testing.T, ns, name, target string, mutate func(*securityv1alpha1.Quarantine)) *securityv1alpha1.Quarantine {
	t.Helper()
	ctx := context.Background()
	q := &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: securityv1alpha1.QuarantineSpec{
			Target:  securityv1alpha1.Target{Name: target},
			Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}, {Type: securityv1alpha1.ActionScaleToZero}},
			Reason:  &securityv1alpha1.QuarantineReason{Policy: "web-tier", Policies: []string{"web-tier"}, Detector: "behavior", Score: "0.97", Summary: "new binary /tmp/x spawned by nginx"},
		},
	}
	status := q.Status
	if mutate != nil {
		mutate(q)
		status = q.Status
	}
	if err := admin.Create(ctx, q); err != nil {
		t.Fatal(err)
	}
	q.Status = status
	if err := admin.Status().Update(ctx, q); err != nil {
		t.Fatal(err)
	}
	return q
}

func get(t *testing.T, ns, name string) *securityv1alpha1.Quarantine {
	t.Helper()
	q := &securityv1alpha1.Quarantine{}
	if err := admin.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, q); err != nil {
		t.Fatal(err)
	}
	return q
}

// row finds the output line starting with the given fields, whitespace-separated.
func row(t *testing.T, out string, fields ...string) []string {
	t.Helper()
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= len(fields) && strings.Join(f[:len(fields)], " ") == strings.Join(fields, " ") {
			return f
		}
	}
	t.Fatalf("no row starting with %q in:\n%s", fields, out)
	return nil
}

func TestList(t *testing.T) {
	a, b := namespace(t, nil), namespace(t, nil)
	quarantine(t, a, "shop-1", "shop-1", func(q *securityv1alpha1.Quarantine) { q.Status.Phase = securityv1alpha1.PhaseContained })
	quarantine(t, a, "cart-1", "cart-1", func(q *securityv1alpha1.Quarantine) {
		q.Spec.Approved = ptr.To(false)
		q.Spec.Target.Kind = securityv1alpha1.TargetDeployment
		q.Spec.Reason.Score, q.Spec.Reason.Policy = "0.85", "strict"
		q.Status.Phase = securityv1alpha1.PhasePending
	})
	quarantine(t, b, "other-1", "other-1", nil)

	out := mustRun(t, "list", "-n", a)
	if got := strings.Fields(strings.SplitN(out, "\n", 2)[0]); strings.Join(got, " ") != "NAME TARGET PHASE SCORE POLICY APPROVED RELEASED AGE" {
		t.Errorf("header = %q", got)
	}
	if f := row(t, out, "shop-1"); strings.Join(f[1:7], " ") != "Pod/shop-1 Contained 0.97 web-tier yes no" {
		t.Errorf("shop-1 row = %q", f)
	}
	if f := row(t, out, "cart-1"); strings.Join(f[1:7], " ") != "Deployment/cart-1 Pending 0.85 strict no no" {
		t.Errorf("cart-1 row = %q", f)
	}
	if strings.Contains(out, "other-1") {
		t.Errorf("list -n %s shows another namespace's quarantine:\n%s", a, out)
	}

	out = mustRun(t, "list", "-A")
	row(t, out, a, "shop-1", "Pod/shop-1")
	row(t, out, b, "other-1", "Pod/other-1", "<none>")

	empty := namespace(t, nil)
	out, errOut, err := run(t, "", "list", "-n", empty)
	if err != nil || out != "" || !strings.Contains(errOut, "No quarantines found in namespace "+empty) {
		t.Errorf("empty namespace: err %v, out %q, stderr %q", err, out, errOut)
	}
}

func TestDescribe(t *testing.T) {
	ns := namespace(t, nil)
	base := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	quarantine(t, ns, "shop-1", "shop-1", func(q *securityv1alpha1.Quarantine) {
		q.Annotations = map[string]string{securityv1alpha1.ActorAnnotation: "bob"}
		q.Status.Phase = securityv1alpha1.PhaseContained
		q.Status.Target = &securityv1alpha1.ResolvedTarget{UID: "u-1", Node: "node-a", Owner: "Deployment/shop"}
		q.Status.Actions = []securityv1alpha1.ActionStatus{
			{Type: securityv1alpha1.ActionIsolate, State: securityv1alpha1.ActionApplied, Resource: "NetworkPolicy/bulkhead-shop-1", AppliedAt: &metav1.Time{Time: base},
				Kernel: []securityv1alpha1.KernelEnforcement{{Pod: "shop-1", Node: "node-a", Enforced: true, ConnectionsCut: true, SocketsDestroyed: 2,
					Method: "bpf_sock_destroy", ReportedAt: metav1.Time{Time: base}}}},
			{Type: securityv1alpha1.ActionScaleToZero, State: securityv1alpha1.ActionRefused, Message: "DaemonSet cannot be scaled"},
		}
		q.Status.Evidence = &securityv1alpha1.Evidence{
			CapturedAt: metav1.Time{Time: base},
			Node:       "node-a",
			OwnerChain: []string{"ReplicaSet/shop-7f9c", "Deployment/shop"},
			Images:     []securityv1alpha1.ContainerImage{{Container: "app", Image: "nginx:1.27", ImageID: "docker.io/nginx@sha256:abc"}},
			Scores: []securityv1alpha1.ScoreComponent{
				{Source: "behavior", Score: "0.97", Weight: 60, Reason: "new binary"},
				{Source: "misconfiguration", Delta: "+0.05", Reason: "privileged"},
			},
			SecretRef: "bulkhead-evidence-shop-1",
			SHA256:    strings.Repeat("a", 64),
			SizeBytes: 123456,
		}
		q.Status.Conditions = []metav1.Condition{{Type: securityv1alpha1.ConditionIsolationEffective, Status: metav1.ConditionFalse, Reason: "OtherPoliciesAdmit", Message: "NetworkPolicy/allow-all admits the pod", LastTransitionTime: metav1.Time{Time: base}}}
		for i := range 12 {
			q.Status.Audit = append(q.Status.Audit, securityv1alpha1.AuditEntry{
				Time: metav1.Time{Time: base.Add(time.Duration(i) * time.Minute)}, Actor: "bulkhead/containment", Event: fmt.Sprintf("Step%02d", i),
			})
		}
		q.Status.AuditDropped = 7
	})

	out := mustRun(t, "describe", "shop-1", "-n", ns)
	for _, want := range []string{
		"Target:           Pod/shop-1 (uid u-1, node node-a, owner Deployment/shop)",
		"Phase:            Contained",
		"Score:            0.97 (top detector behavior)",
		"Last changed by:  bob",
		"Owner chain:    ReplicaSet/shop-7f9c → Deployment/shop",
		"nginx:1.27 docker.io/nginx@sha256:abc",
		"misconfiguration moved the score +0.05: privileged",
		"Full evidence:  Secret bulkhead-evidence-shop-1",
		"(7 entries dropped)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}
	row(t, out, "Isolate", "Applied", "NetworkPolicy/bulkhead-shop-1", "2026-11-24T12:00:00Z")
	row(t, out, "ScaleToZero", "Refused", "-")
	row(t, out, "shop-1", "node-a", "yes", "yes", "(2,", "bpf_sock_destroy)")
	row(t, out, "IsolationEffective", "False", "OtherPoliciesAdmit")
	// The gap marker sits between the first 10 entries and the rest.
	if !regexp.MustCompile(`(?s)Step09.*entries dropped.*Step10.*Step11`).MatchString(out) {
		t.Errorf("timeline order wrong:\n%s", out)
	}

	if _, _, err := run(t, "", "describe", "missing", "-n", ns); err == nil {
		t.Error("describing a missing quarantine succeeded")
	}
}

func TestApprove(t *testing.T) {
	ns := namespace(t, nil)
	quarantine(t, ns, "waiting", "waiting", func(q *securityv1alpha1.Quarantine) { q.Spec.Approved = ptr.To(false) })

	out := mustRun(t, "approve", "waiting", "-n", ns)
	if !strings.Contains(out, "approved by "+user) {
		t.Errorf("output %q", out)
	}
	q := get(t, ns, "waiting")
	if !q.IsApproved() || q.Annotations[securityv1alpha1.ActorAnnotation] != user {
		t.Errorf("after approve: approved %v, actor %q", q.IsApproved(), q.Annotations[securityv1alpha1.ActorAnnotation])
	}
	// Other annotations survive: it is a merge patch, not an update.
	if q.IsReleased() {
		t.Error("approve released the quarantine")
	}

	quarantine(t, ns, "gone", "gone", func(q *securityv1alpha1.Quarantine) {
		q.Spec.Approved, q.Spec.Released = ptr.To(false), ptr.To(true)
	})
	if _, _, err := run(t, "", "approve", "gone", "-n", ns); err == nil || !strings.Contains(err.Error(), "released") {
		t.Errorf("approving a released quarantine: %v", err)
	}
	if get(t, ns, "gone").IsApproved() {
		t.Error("a released quarantine was approved")
	}
}

func TestRelease(t *testing.T) {
	ns := namespace(t, nil)
	quarantine(t, ns, "one", "one", func(q *securityv1alpha1.Quarantine) {
		q.Annotations = map[string]string{"keep": "me"}
	})
	out := mustRun(t, "release", "one", "-n", ns)
	if !strings.Contains(out, "released by "+user) {
		t.Errorf("output %q", out)
	}
	q := get(t, ns, "one")
	if !q.IsReleased() || q.Annotations[securityv1alpha1.ActorAnnotation] != user || q.Annotations["keep"] != "me" {
		t.Errorf("after release: released %v, annotations %v", q.IsReleased(), q.Annotations)
	}
	if out := mustRun(t, "release", "one", "-n", ns); !strings.Contains(out, "already released") {
		t.Errorf("second release: %q", out)
	}
	if _, _, err := run(t, "", "release", "-n", ns); err == nil {
		t.Error("release without NAME or --all succeeded")
	}
}

func TestReleaseAll(t *testing.T) {
	a, b := namespace(t, nil), namespace(t, nil)
	for _, n := range []string{"x", "y"} {
		quarantine(t, a, n, n, nil)
	}
	quarantine(t, b, "z", "z", nil)
	released := func(ns, name string) bool { return get(t, ns, name).IsReleased() }

	out, _, err := run(t, "n\n", "release", "--all", "-n", a)
	if err == nil || !strings.Contains(out, "Release these 2 quarantines in namespace "+a) {
		t.Errorf("declined --all: err %v, out:\n%s", err, out)
	}
	if released(a, "x") || released(a, "y") {
		t.Fatal("declining the confirmation released something")
	}

	if _, _, err := run(t, "yes\n", "release", "--all", "-n", a); err != nil {
		t.Fatal(err)
	}
	if !released(a, "x") || !released(a, "y") {
		t.Error("--all confirmed did not release every quarantine in the namespace")
	}
	if released(b, "z") {
		t.Error("--all -n released a quarantine in another namespace")
	}
	if get(t, a, "x").Annotations[securityv1alpha1.ActorAnnotation] != user {
		t.Error("--all did not record the actor")
	}

	out = mustRun(t, "release", "--all", "-A", "--yes")
	if !released(b, "z") || !strings.Contains(out, b+"/z released by "+user) {
		t.Errorf("--all -A --yes: z released %v, out:\n%s", released(b, "z"), out)
	}
	if strings.Contains(out, a+"/x") {
		t.Errorf("--all -A released an already released quarantine again:\n%s", out)
	}
}

func TestPauseResume(t *testing.T) {
	ctx := context.Background()
	mgr := namespace(t, nil)
	cm := func() *corev1.ConfigMap {
		c := &corev1.ConfigMap{}
		if err := admin.Get(ctx, client.ObjectKey{Namespace: mgr, Name: securityv1alpha1.ControlConfigMap}, c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	if out := mustRun(t, "resume", "--manager-namespace", mgr); !strings.Contains(out, "not paused") {
		t.Errorf("resume when never paused: %q", out)
	}

	out := mustRun(t, "pause", "--manager-namespace", mgr)
	if !strings.Contains(out, "paused by "+user) {
		t.Errorf("pause output %q", out)
	}
	c := cm()
	if c.Data[securityv1alpha1.PausedKey] != "true" || c.Annotations[securityv1alpha1.ActorAnnotation] != user ||
		c.Labels[securityv1alpha1.ManagedByLabel] != securityv1alpha1.ManagedByValue {
		t.Errorf("after pause: labels %v, annotations %v, data %v", c.Labels, c.Annotations, c.Data)
	}
	if out := mustRun(t, "pause", "--manager-namespace", mgr); !strings.Contains(out, "already paused (by "+user+")") {
		t.Errorf("second pause: %q", out)
	}

	// Keys someone else keeps in the ConfigMap survive resume.
	c.Data["note"] = "incident 42"
	if err := admin.Update(ctx, c); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "resume", "--manager-namespace", mgr)
	c = cm()
	if c.Data[securityv1alpha1.PausedKey] != "false" || c.Data["note"] != "incident 42" {
		t.Errorf("after resume: %v", c.Data)
	}
}
