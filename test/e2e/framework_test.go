//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/test/framework"
	"github.com/bulkhead-dev/bulkhead/test/framework/localcluster"
)

// externalDetector is the external model the scenarios post scores for.
const externalDetector = "e2e-model"

// scenarioLabel selects a scenario's namespace from its ThreatPolicy.
const scenarioLabel = "e2e.bulkhead.dev/scenario"

// scenario is one test in its own fresh namespace.
type scenario struct {
	t  *testing.T
	ns string
	c  client.Client
	// undo runs at the end, after a failure's dump, in reverse order.
	undo []func()
}

// newScenario creates a fresh namespace labelled for the scenario's policy.
// On failure it dumps the manager's log and the namespace's Events and
// Bulkhead objects; at the end it deletes what the scenario made and checks
// that no node is left cordoned or tainted.
func newScenario(t *testing.T) *scenario {
	t.Helper()
	if env.ctx.Err() != nil {
		t.Skip("interrupted")
	}
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	name := strings.Trim(regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 40 {
		name = name[:40]
	}
	s := &scenario{t: t, ns: "e2e-" + name + "-" + hex.EncodeToString(suffix), c: env.cluster.Client}
	logf("%s: namespace %s", t.Name(), s.ns)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.ns, Labels: map[string]string{scenarioLabel: s.ns}}}
	if err := s.c.Create(env.ctx, ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			s.dump()
		}
		for i := len(s.undo) - 1; i >= 0; i-- {
			s.undo[i]()
		}
		s.cleanup()
	})
	return s
}

// eventually polls check every 250ms until it returns nil, printing
// progress every 10s; on timeout it fails the test with the last error.
func (s *scenario) eventually(timeout time.Duration, what string, check func(ctx context.Context) error) {
	s.t.Helper()
	if err := poll(env.ctx, timeout, what, check); err != nil {
		s.t.Fatal(err)
	}
}

func poll(ctx context.Context, timeout time.Duration, what string, check func(ctx context.Context) error) error {
	return framework.Wait{What: what, Timeout: timeout, Logf: indented}.Until(ctx, check)
}

func indented(format string, args ...any) { logf("  "+format, args...) }

// consistently checks that check keeps returning nil for d.
func (s *scenario) consistently(d time.Duration, what string, check func(ctx context.Context) error) {
	s.t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if err := check(env.ctx); err != nil {
			s.t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	logf("  ✓ %s (for %s)", what, d)
}

func (s *scenario) kubectl(stdin string, args ...string) string {
	s.t.Helper()
	var in io.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	out, err := env.cluster.Kubectl(env.ctx, in, args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// applyPolicy server-side applies a ThreatPolicy selecting this scenario's
// namespace, and deletes it at the end.
func (s *scenario) applyPolicy(name, yaml string) {
	s.t.Helper()
	s.kubectl(yaml, "apply", "--server-side", "--field-manager=e2e", "-f", "-")
	s.deletePolicyAtEnd(name)
}

func (s *scenario) deletePolicyAtEnd(name string) {
	s.undo = append(s.undo, func() {
		_, _ = env.cluster.Kubectl(context.Background(), nil, "delete", "threatpolicy", name, "--ignore-not-found", "--wait=false")
	})
}

// policyYAML is a ThreatPolicy for this scenario: the external detector
// alone, threshold 0.80, sustained over two signals, isolating on a hit.
func (s *scenario) policyYAML(name string, mode securityv1alpha1.PolicyMode) string {
	return framework.Policy{
		Name:                 name,
		Mode:                 string(mode),
		NamespaceLabels:      map[string]string{scenarioLabel: s.ns},
		PodLabels:            map[string]string{"app": "shop"},
		Detectors:            []framework.Detector{{Name: externalDetector, Weight: 100}},
		Sustain:              2,
		Response:             []framework.Step{{MinScore: "0.80", Actions: "[{type: Isolate, isolate: {allowDNS: true}}]"}},
		MaxActiveQuarantines: 5,
	}.YAML()
}

// deployShop creates a Deployment "shop" with replicas pods (optionally
// pinned to one node) and waits until the scheduler has placed them and
// kwok reports them Running; it returns the pods sorted by name.
func (s *scenario) deployShop(replicas int32, node string) []corev1.Pod {
	s.t.Helper()
	labels := map[string]string{"app": "shop"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: s.ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "shop", Image: "registry.example/shop:1.0"}},
				},
			},
		},
	}
	if node != "" {
		d.Spec.Template.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	}
	if err := s.c.Create(env.ctx, d); err != nil {
		s.t.Fatalf("creating Deployment shop: %v", err)
	}
	return s.waitShopRunning(replicas, node)
}

// waitShopRunning waits for exactly n Running shop pods (on node, if set).
func (s *scenario) waitShopRunning(n int32, node string) []corev1.Pod {
	s.t.Helper()
	var pods []corev1.Pod
	what := fmt.Sprintf("%d shop pods Running", n)
	if node != "" {
		what += " on " + node
	}
	s.eventually(60*time.Second, what, func(ctx context.Context) error {
		var err error
		pods, err = localcluster.RunningPods(ctx, s.c, s.ns, map[string]string{"app": "shop"}, n, node)
		return err
	})
	return pods
}

// postScore sends one external score for pod through the ingestion API and
// requires it accepted.
func (s *scenario) postScore(pod string, score float64) {
	s.t.Helper()
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	code, resp, err := env.manager.Ingest.PostScores(env.ctx, framework.Score{
		Namespace: s.ns, Pod: pod, Detector: externalDetector, Score: score,
		Reason: "e2e: anomalous behaviour", ID: hex.EncodeToString(id), Time: time.Now().UTC(),
	})
	if err != nil || code/100 != 2 {
		s.t.Fatalf("POST /v1/scores for %s/%s: %d %s %v", s.ns, pod, code, resp, err)
	}
	logf("  → POST /v1/scores %s score=%.2f: %d", pod, score, code)
}

// quarantineFor returns the Quarantine whose target is pod, or an error.
func (s *scenario) quarantineFor(ctx context.Context, pod string) (*securityv1alpha1.Quarantine, error) {
	return framework.QuarantineFor(ctx, s.c, s.ns, pod)
}

// waitQuarantineFor waits for a Quarantine whose target is pod and returns its name.
func (s *scenario) waitQuarantineFor(pod string) string {
	s.t.Helper()
	var name string
	s.eventually(30*time.Second, "Quarantine for "+pod, func(ctx context.Context) error {
		q, err := s.quarantineFor(ctx, pod)
		if err != nil {
			return err
		}
		name = q.Name
		return nil
	})
	return name
}

func (s *scenario) quarantine(ctx context.Context, name string) (*securityv1alpha1.Quarantine, error) {
	var q securityv1alpha1.Quarantine
	err := s.c.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: name}, &q)
	return &q, err
}

// waitPhase waits for the Quarantine's phase.
func (s *scenario) waitPhase(name string, phase securityv1alpha1.QuarantinePhase) *securityv1alpha1.Quarantine {
	s.t.Helper()
	var q *securityv1alpha1.Quarantine
	s.eventually(60*time.Second, "Quarantine "+name+" "+string(phase), func(ctx context.Context) (err error) {
		if q, err = s.quarantine(ctx, name); err != nil {
			return err
		}
		if q.Status.Phase != phase {
			return fmt.Errorf("phase %q, actions %s", q.Status.Phase, actionStates(q))
		}
		return nil
	})
	return q
}

func actionStates(q *securityv1alpha1.Quarantine) string { return framework.ActionStates(q) }

// requireActionApplied checks one action's status entry.
func requireActionApplied(t *testing.T, q *securityv1alpha1.Quarantine, typ securityv1alpha1.ActionType) securityv1alpha1.ActionStatus {
	t.Helper()
	for _, a := range q.Status.Actions {
		if a.Type == typ {
			if a.State != securityv1alpha1.ActionApplied {
				t.Fatalf("action %s is %s: %s", typ, a.State, a.Message)
			}
			return a
		}
	}
	t.Fatalf("action %s missing from status: %s", typ, actionStates(q))
	return securityv1alpha1.ActionStatus{}
}

// checkIsolated checks the pod's quarantine label and the NetworkPolicy
// bulkhead-<quarantine>, checking that the policy denies all ingress and
// allows egress only to DNS.
func (s *scenario) checkIsolated(ctx context.Context, pod, qname string) error {
	var p corev1.Pod
	if err := s.c.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: pod}, &p); err != nil {
		return err
	}
	if got := p.Labels[securityv1alpha1.QuarantineLabel]; got != qname {
		return fmt.Errorf("pod %s label %s=%q, want %q", pod, securityv1alpha1.QuarantineLabel, got, qname)
	}
	var np networkingv1.NetworkPolicy
	if err := s.c.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: "bulkhead-" + qname}, &np); err != nil {
		return err
	}
	if np.Labels[securityv1alpha1.ManagedByLabel] != securityv1alpha1.ManagedByValue {
		return fmt.Errorf("NetworkPolicy %s lacks %s=%s", np.Name, securityv1alpha1.ManagedByLabel, securityv1alpha1.ManagedByValue)
	}
	if np.Spec.PodSelector.MatchLabels[securityv1alpha1.QuarantineLabel] != qname {
		return fmt.Errorf("NetworkPolicy %s selects %v, not the quarantine label", np.Name, np.Spec.PodSelector)
	}
	types := map[networkingv1.PolicyType]bool{}
	for _, pt := range np.Spec.PolicyTypes {
		types[pt] = true
	}
	if !types[networkingv1.PolicyTypeIngress] || !types[networkingv1.PolicyTypeEgress] || len(np.Spec.Ingress) != 0 {
		return fmt.Errorf("NetworkPolicy %s does not deny all ingress and egress: %+v", np.Name, np.Spec)
	}
	for _, e := range np.Spec.Egress {
		for _, port := range e.Ports {
			if port.Port == nil || port.Port.IntValue() != 53 {
				return fmt.Errorf("NetworkPolicy %s allows egress other than DNS: %+v", np.Name, e)
			}
		}
		if len(e.Ports) == 0 {
			return fmt.Errorf("NetworkPolicy %s allows egress on every port: %+v", np.Name, e)
		}
	}
	return nil
}

// checkNotIsolated is the converse: no label, no NetworkPolicy in the namespace.
func (s *scenario) checkNotIsolated(ctx context.Context, pod string) error {
	var p corev1.Pod
	if err := s.c.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: pod}, &p); err != nil {
		return err
	}
	if v, ok := p.Labels[securityv1alpha1.QuarantineLabel]; ok {
		return fmt.Errorf("pod %s carries %s=%s", pod, securityv1alpha1.QuarantineLabel, v)
	}
	var nps networkingv1.NetworkPolicyList
	if err := s.c.List(ctx, &nps, client.InNamespace(s.ns)); err != nil {
		return err
	}
	if len(nps.Items) != 0 {
		return fmt.Errorf("NetworkPolicy %s exists", nps.Items[0].Name)
	}
	return nil
}

// nodeCordoned reports whether Bulkhead's cordon (unschedulable + taint) is on.
func nodeCordoned(ctx context.Context, name string) (bool, error) {
	var n corev1.Node
	if err := env.cluster.Client.Get(ctx, client.ObjectKey{Name: name}, &n); err != nil {
		return false, err
	}
	tainted := framework.QuarantineTainted(&n)
	if tainted != n.Spec.Unschedulable {
		return false, fmt.Errorf("node %s: unschedulable=%v but quarantine taint=%v", name, n.Spec.Unschedulable, tainted)
	}
	return tainted, nil
}

func (s *scenario) replicas(ctx context.Context) (int32, error) {
	var d appsv1.Deployment
	if err := s.c.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: "shop"}, &d); err != nil {
		return 0, err
	}
	return ptr.Deref(d.Spec.Replicas, 1), nil
}

// dump prints what a failed scenario needs to be understood.
func (s *scenario) dump() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	section := func(title string, args ...string) {
		out, err := env.cluster.Kubectl(ctx, nil, args...)
		if err != nil {
			out += "\n" + err.Error()
		}
		s.t.Logf("===== %s\n%s", title, out)
	}
	s.t.Logf("===== manager log (last 12 KiB of %s)\n%s", env.manager.LogPath, env.manager.Logs(12<<10))
	section("events in "+s.ns, "get", "events", "-n", s.ns, "--sort-by=.lastTimestamp")
	section("quarantines", "get", "quarantines", "-n", s.ns, "-o", "yaml")
	section("threatpolicies", "get", "threatpolicies", "-o", "yaml")
	section("manager's permissions (config/rbac as enforced)", "auth", "can-i", "--list", "--as="+env.manager.User)
	section("pods, deployments, networkpolicies", "get", "pods,deployments,networkpolicies", "-n", s.ns, "-o", "wide", "--show-labels")
	section("nodes", "get", "nodes", "-o", "custom-columns=NAME:.metadata.name,UNSCHEDULABLE:.spec.unschedulable,TAINTS:.spec.taints")
}

// cleanup deletes the scenario's Quarantines (the manager undoes them),
// then the namespace, and requires every node schedulable and untainted
// again, so one scenario's leftovers never become another's failure.
func (s *scenario) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var left securityv1alpha1.QuarantineList
	if err := s.c.List(ctx, &left, client.InNamespace(s.ns)); err != nil {
		s.t.Errorf("cleanup: listing Quarantines: %v", err)
	}
	for i := range left.Items {
		if err := s.c.Delete(ctx, &left.Items[i]); client.IgnoreNotFound(err) != nil {
			s.t.Errorf("cleanup: deleting Quarantine %s: %v", left.Items[i].Name, err)
		}
	}
	err := poll(ctx, 30*time.Second, "Quarantines in "+s.ns+" released and gone", func(ctx context.Context) error {
		var list securityv1alpha1.QuarantineList
		if err := s.c.List(ctx, &list, client.InNamespace(s.ns)); err != nil {
			return err
		}
		if len(list.Items) > 0 {
			return fmt.Errorf("%d left, first %s phase %s", len(list.Items), list.Items[0].Name, list.Items[0].Status.Phase)
		}
		return nil
	})
	if err != nil {
		s.t.Errorf("cleanup: %v; removing finalizers", err)
		s.dump()
		var list securityv1alpha1.QuarantineList
		_ = s.c.List(ctx, &list, client.InNamespace(s.ns))
		for i := range list.Items {
			q := &list.Items[i]
			_ = s.c.Patch(ctx, q, client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`)))
		}
	}
	_ = s.c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.ns}})
	for _, n := range env.cluster.Nodes {
		if cordoned, err := nodeCordoned(ctx, n); err != nil || cordoned {
			s.t.Errorf("cleanup: node %s left cordoned by the scenario (%v); uncordoning", n, err)
			_, _ = env.cluster.Kubectl(ctx, nil, "uncordon", n)
			_, _ = env.cluster.Kubectl(ctx, nil, "taint", "node", n, securityv1alpha1.QuarantineTaintKey+":NoSchedule-")
		}
	}
}
