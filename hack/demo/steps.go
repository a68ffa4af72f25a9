package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/eval"
	"github.com/bulkhead-dev/bulkhead/test/framework"
	"github.com/bulkhead-dev/bulkhead/test/framework/localcluster"
)

const (
	shopNS        = "shop"
	enforcePolicy = "web-tier"
	// watchPolicy is a DryRun policy over the same pods with a near-zero
	// threshold: its status.plans show every score the pod gets, which is
	// how a user watches scores without acting on them.
	watchPolicy = "shop-watch"
)

// attacked is the pod the attack is replayed as, and what containment did.
var attacked struct {
	pod, node, quarantine string
}

// loadDataset reads ADFA-LD from $BULKHEAD_SHARED/datasets/adfa-ld and
// names each i386 system call.
func loadDataset() (*eval.Split, error) {
	shared := os.Getenv("BULKHEAD_SHARED")
	if shared == "" {
		return nil, fmt.Errorf("--mode=adfa replays the public ADFA-LD data set: set BULKHEAD_SHARED to the folder holding datasets/")
	}
	dir := filepath.Join(shared, "datasets", "adfa-ld")
	split, err := eval.LoadADFA(dir)
	if err != nil {
		return nil, fmt.Errorf("the demo replays ADFA-LD from %s (set BULKHEAD_SHARED to the folder holding datasets/): %w", dir, err)
	}
	names, err := syscallNames(filepath.Join(dir, "syscalls-i386.csv"))
	if err != nil {
		return nil, err
	}
	for _, l := range [][]eval.Trace{split.Train, split.Validation, split.Attack} {
		for i := range l {
			for j, n := range l[i].Syscalls {
				if name, ok := names[n]; ok {
					l[i].Syscalls[j] = name
				}
			}
		}
	}
	return split, nil
}

func syscallNames(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		if num, name, ok := strings.Cut(strings.TrimSpace(line), ","); ok {
			m[num] = name
		}
	}
	return m, nil
}

func (d *demo) deployShop() error {
	c := d.cluster.Client
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: shopNS, Labels: map[string]string{"tier": "web"}}}
	if err := c.Create(d.ctx, ns); err != nil {
		return err
	}
	labels := map[string]string{"app": "shop"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: shopNS, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(d.cfg.replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "shop", Image: "registry.example/shop:1.0",
					Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
				}}},
			},
		},
	}
	if err := c.Create(d.ctx, dep); err != nil {
		return err
	}
	if _, err := d.shopPods(d.cfg.replicas); err != nil {
		return err
	}
	return d.showKubectl("get", "pods", "-n", shopNS, "-o", "wide")
}

// shopPods waits until exactly n shop pods are Running and returns them by name.
func (d *demo) shopPods(n int32) ([]corev1.Pod, error) {
	var pods []corev1.Pod
	err := d.poll(60*time.Second, fmt.Sprintf("%d shop pods scheduled and Running", n), func(ctx context.Context) error {
		var err error
		pods, err = localcluster.RunningPods(ctx, d.cluster.Client, shopNS, map[string]string{"app": "shop"}, n, "")
		return err
	})
	return pods, err
}

func (d *demo) applyPolicies() error {
	shop := map[string]string{"app": "shop"}
	web := map[string]string{"tier": "web"}
	policies := framework.Policies(
		framework.Policy{
			Name: enforcePolicy, NamespaceLabels: web, PodLabels: shop,
			Detectors: []framework.Detector{{Name: "behavior", Weight: 60}, {Name: "falco", Weight: 40}},
			// 0.80 three evaluations in a row: the 2,186 normal ADFA-LD
			// validation traces, replayed the same way, never reached it when
			// this was written.
			Threshold: d.cfg.threshold, Sustain: 3,
			Response: []framework.Step{
				{MinScore: d.cfg.threshold, Actions: "[{type: Isolate, isolate: {allowDNS: true}}]"},
				{MinScore: d.cfg.escalate, Actions: "[{type: ScaleToZero}, {type: CordonNode}]"},
			},
			MaxActiveQuarantines: 10, MinSchedulableNodes: 1,
		},
		framework.Policy{
			Name: watchPolicy, Mode: "DryRun", NamespaceLabels: web, PodLabels: shop,
			Detectors: []framework.Detector{{Name: "behavior", Weight: 100}},
			Threshold: "0.01",
			Response:  []framework.Step{{MinScore: "0.01", Actions: "[{type: Isolate}]"}},
		},
	)
	return d.applyPolicyList([]string{enforcePolicy, watchPolicy}, policies)
}

// applyPolicyList applies policies (YAML) as a GitOps tool would and waits
// until each named one is Ready.
func (d *demo) applyPolicyList(names []string, policies string) error {
	for _, l := range splitLines(policies) {
		fmt.Printf("           %s\n", l)
	}
	if _, err := d.cluster.Kubectl(d.ctx, strings.NewReader(policies), "apply", "--server-side", "--field-manager=demo-gitops", "-f", "-"); err != nil {
		return err
	}
	for _, name := range names {
		err := d.poll(30*time.Second, "ThreatPolicy "+name+" Ready", func(ctx context.Context) error {
			var tp securityv1alpha1.ThreatPolicy
			if err := d.cluster.Client.Get(ctx, client.ObjectKey{Name: name}, &tp); err != nil {
				return err
			}
			for _, c := range tp.Status.Conditions {
				if c.Type == securityv1alpha1.ConditionReady && c.Status == metav1.ConditionTrue && tp.Status.ObservedGeneration == tp.Generation {
					return nil
				}
			}
			return fmt.Errorf("not Ready yet (conditions %v)", tp.Status.Conditions)
		})
		if err != nil {
			return err
		}
	}
	return d.showKubectl("get", "threatpolicies")
}

// syscallBatch is one item of POST /v1/syscalls.
type syscallBatch struct {
	Namespace string    `json:"namespace"`
	Pod       string    `json:"pod"`
	Container string    `json:"container"`
	ID        string    `json:"id"`
	Time      time.Time `json:"time"`
	Calls     string    `json:"calls"`
}

// learn posts the training traces, spread over the shop's pods as the
// processes they ran, then waits for the learning window to close.
func (d *demo) learn(split *eval.Split) error {
	pods, err := d.shopPods(d.cfg.replicas)
	if err != nil {
		return err
	}
	learnStart := time.Now()
	traces := split.Train[:min(d.cfg.trainTraces, len(split.Train))]
	total := 0
	const perRequest = 100
	for i := 0; i < len(traces); i += perRequest {
		var batch []syscallBatch
		for j, tr := range traces[i:min(i+perRequest, len(traces))] {
			batch = append(batch, syscallBatch{
				Namespace: shopNS, Pod: pods[(i+j)%len(pods)].Name, Container: "shop",
				ID: "train-" + tr.Name, Time: time.Now().UTC(), Calls: strings.Join(tr.Syscalls, " "),
			})
			total += len(tr.Syscalls)
		}
		if err := d.postSyscalls(batch); err != nil {
			return err
		}
		d.say("POST /v1/syscalls: %4d/%d normal traces (%d system calls) across %d pods", min(i+perRequest, len(traces)), len(traces), total, len(pods))
	}
	rest := d.cfg.learningWindow - time.Since(learnStart) + time.Second
	if rest > 0 {
		d.say("waiting %s for the learning window (--behavior-learning-window=%s) to close", rest.Round(time.Second), d.cfg.learningWindow)
		select {
		case <-time.After(rest):
		case <-d.ctx.Done():
			return d.ctx.Err()
		}
	}
	return nil
}

// attack replays each process trace of one ADFA-LD attack run, in order, as
// the behaviour of one shop pod, showing the score after each, until the
// policy has quarantined the pod, then waits for every action to apply.
func (d *demo) attack(split *eval.Split) error {
	pods, err := d.shopPods(d.cfg.replicas)
	if err != nil {
		return err
	}
	target := pods[0]
	attacked.pod, attacked.node = target.Name, target.Spec.NodeName
	var run []eval.Trace
	for _, tr := range split.Attack {
		if strings.HasPrefix(tr.Name, "attack/"+d.cfg.attackRun+"/") {
			run = append(run, tr)
		}
	}
	if len(run) == 0 {
		return fmt.Errorf("no attack run %q in the data set", d.cfg.attackRun)
	}
	d.say("replaying %d process traces of %s (%s) as pod %s on %s", len(run), d.cfg.attackRun, run[0].Family, target.Name, target.Spec.NodeName)
	// The watch policy's status keeps the latest plan per pod: a new
	// evaluation shows as a plan with a new time or score. Status times
	// have one-second resolution, so traces are sent at least a second apart.
	var last securityv1alpha1.Plan
	for _, tr := range run {
		sent := time.Now()
		err := d.postSyscalls([]syscallBatch{{
			Namespace: shopNS, Pod: target.Name, Container: "shop",
			ID: "attack-" + tr.Name, Time: sent.UTC(), Calls: strings.Join(tr.Syscalls, " "),
		}})
		if err != nil {
			return err
		}
		var plan *securityv1alpha1.Plan
		_ = d.poll(5*time.Second, "", func(ctx context.Context) error {
			var tp securityv1alpha1.ThreatPolicy
			if err := d.cluster.Client.Get(ctx, client.ObjectKey{Name: watchPolicy}, &tp); err != nil {
				return err
			}
			for i, p := range tp.Status.Plans {
				if p.Namespace == shopNS && p.Pod == target.Name && (!p.Time.Equal(&last.Time) || p.Score != last.Score) {
					plan = &tp.Status.Plans[i]
					return nil
				}
			}
			return fmt.Errorf("no new score")
		})
		score, why := "—", "no new evaluation visible yet"
		if plan != nil {
			last = *plan
			score, why = string(plan.Score), breakdown(plan.Breakdown)
		}
		q, _ := d.quarantineOf(target.Name)
		state := ""
		if q != nil {
			attacked.quarantine = q.Name
			state = fmt.Sprintf("  → Quarantine %s %s", q.Name, q.Status.Phase)
		}
		d.say("%-34s %5d calls  score %-6s %s%s", tr.Name, len(tr.Syscalls), score, why, state)
		if q != nil {
			// Contained: the pod may be gone (ScaleToZero), so its
			// behaviour ends here.
			break
		}
		if rest := time.Second - time.Since(sent); rest > 0 {
			time.Sleep(rest)
		}
	}
	if attacked.quarantine == "" {
		return fmt.Errorf("the attack run was replayed but no Quarantine was created for %s (threshold %s, sustain 3)", target.Name, d.cfg.threshold)
	}
	return d.poll(30*time.Second, "Isolate, ScaleToZero and CordonNode applied", func(ctx context.Context) error {
		q, err := d.quarantineOf(target.Name)
		if err != nil {
			return err
		}
		if !escalated(q) {
			return fmt.Errorf("actions %v", framework.ActionStates(q))
		}
		return nil
	})
}

func escalated(q *securityv1alpha1.Quarantine) bool {
	applied := map[securityv1alpha1.ActionType]bool{}
	for _, a := range q.Status.Actions {
		applied[a.Type] = a.State == securityv1alpha1.ActionApplied
	}
	return applied[securityv1alpha1.ActionIsolate] && applied[securityv1alpha1.ActionScaleToZero] && applied[securityv1alpha1.ActionCordonNode]
}

func breakdown(b []securityv1alpha1.ScoreComponent) string {
	parts := make([]string, 0, len(b))
	for _, c := range b {
		s := c.Source + " " + string(c.Score)
		if c.Reason != "" {
			s += ": " + c.Reason
		}
		parts = append(parts, s)
	}
	out := strings.Join(parts, "; ")
	if len(out) > 90 {
		out = out[:87] + "..."
	}
	return out
}

func (d *demo) quarantineOf(pod string) (*securityv1alpha1.Quarantine, error) {
	return framework.QuarantineFor(d.ctx, d.cluster.Client, shopNS, pod)
}

func (d *demo) checkContained() error {
	c := d.cluster.Client
	q, err := d.quarantineOf(attacked.pod)
	if err != nil {
		return err
	}
	if q.Status.Phase != securityv1alpha1.PhaseContained {
		if err := d.poll(30*time.Second, "Quarantine Contained", func(ctx context.Context) error {
			if q, err = d.quarantineOf(attacked.pod); err == nil && q.Status.Phase != securityv1alpha1.PhaseContained {
				err = fmt.Errorf("phase %s", q.Status.Phase)
			}
			return err
		}); err != nil {
			return err
		}
	}
	if r := q.Spec.Reason; r != nil {
		d.say("Quarantine %s: policy %s, detector %s, score %s — %s", q.Name, r.Policy, r.Detector, r.Score, r.Summary)
	}
	for _, a := range q.Status.Actions {
		extra := ""
		if a.OriginalReplicas != nil {
			extra = fmt.Sprintf(" (was %d replicas)", *a.OriginalReplicas)
		}
		d.say("  %-12s %-8s %s%s", a.Type, a.State, a.Resource, extra)
	}
	var np networkingv1.NetworkPolicy
	if err := c.Get(d.ctx, client.ObjectKey{Namespace: shopNS, Name: "bulkhead-" + q.Name}, &np); err != nil {
		return fmt.Errorf("NetworkPolicy bulkhead-%s: %w", q.Name, err)
	}
	d.say("NetworkPolicy %s selects %v, policyTypes %v, ingress rules %d, egress rules %d (DNS only)", np.Name, np.Spec.PodSelector.MatchLabels, np.Spec.PolicyTypes, len(np.Spec.Ingress), len(np.Spec.Egress))
	var dep appsv1.Deployment
	if err := c.Get(d.ctx, client.ObjectKey{Namespace: shopNS, Name: "shop"}, &dep); err != nil {
		return err
	}
	if r := ptr.Deref(dep.Spec.Replicas, 1); r != 0 {
		return fmt.Errorf("the shop Deployment has %d replicas, want 0", r)
	}
	d.say("Deployment shop scaled to 0 replicas")
	var node corev1.Node
	if err := c.Get(d.ctx, client.ObjectKey{Name: attacked.node}, &node); err != nil {
		return err
	}
	if !node.Spec.Unschedulable || !framework.QuarantineTainted(&node) {
		return fmt.Errorf("node %s not cordoned and tainted (unschedulable %v, taints %v)", node.Name, node.Spec.Unschedulable, node.Spec.Taints)
	}
	d.say("node %s cordoned with taint %s:NoSchedule", node.Name, securityv1alpha1.QuarantineTaintKey)
	if err := d.showKubectl("get", "quarantines", "-A"); err != nil {
		return err
	}
	return d.showKubectl("get", "networkpolicies,deployments,pods", "-n", shopNS)
}

func (d *demo) release() error {
	args := []string{"patch", "quarantine", attacked.quarantine, "-n", shopNS, "--type=merge", "-p", `{"spec":{"released":true}}`}
	if err := d.showKubectl(args...); err != nil {
		return err
	}
	return d.poll(60*time.Second, "Quarantine "+attacked.quarantine+" Released", func(ctx context.Context) error {
		q, err := d.quarantineOf(attacked.pod)
		if err == nil && q.Status.Phase != securityv1alpha1.PhaseReleased {
			err = fmt.Errorf("phase %s, actions %v", q.Status.Phase, framework.ActionStates(q))
		}
		return err
	})
}

func (d *demo) checkRestored() error {
	c := d.cluster.Client
	err := d.poll(30*time.Second, "node "+attacked.node+" uncordoned and untainted", func(ctx context.Context) error {
		var node corev1.Node
		if err := c.Get(ctx, client.ObjectKey{Name: attacked.node}, &node); err != nil {
			return err
		}
		if node.Spec.Unschedulable || framework.QuarantineTainted(&node) {
			return fmt.Errorf("still cordoned")
		}
		return nil
	})
	if err != nil {
		return err
	}
	if _, err := d.shopPods(d.cfg.replicas); err != nil {
		return err
	}
	err = d.networkPolicyGone(15 * time.Second)
	if err != nil {
		return err
	}
	if err := d.showKubectl("get", "quarantines", "-A"); err != nil {
		return err
	}
	if err := d.showKubectl("get", "pods", "-n", shopNS, "-o", "wide"); err != nil {
		return err
	}
	return d.showKubectl("get", "nodes")
}

// reportRefused lists the API requests the manager was refused: permissions
// config/rbac lacks.
func (d *demo) reportRefused() {
	if refused := d.manager.Forbidden(0); len(refused) > 0 {
		fmt.Printf("\n⚠ the manager was refused by RBAC (config/rbac lacks these permissions):\n")
		for _, f := range refused {
			fmt.Printf("    %s\n", f)
		}
	}
}

func (d *demo) summary() {
	d.reportRefused()
	fmt.Printf("\nDemo complete in %s\n", time.Since(d.start).Round(100*time.Millisecond))
	for _, s := range d.steps {
		fmt.Printf("  %-70s %6.1fs\n", s.title, s.took.Seconds())
	}
}

// poll checks every 250ms until check succeeds or timeout; what, when set,
// is reported on success and every 10s while waiting.
func (d *demo) poll(timeout time.Duration, what string, check func(context.Context) error) error {
	err := framework.Wait{What: what, Timeout: timeout, Logf: d.say}.Until(d.ctx, check)
	if err != nil && d.ctx.Err() != nil {
		return d.ctx.Err()
	}
	return err
}

func (d *demo) postSyscalls(batch []syscallBatch) error {
	code, msg, err := d.manager.Ingest.PostJSON(d.ctx, "/v1/syscalls", batch)
	if err != nil {
		return err
	}
	if code/100 != 2 {
		return fmt.Errorf("POST /v1/syscalls: %d: %s", code, msg)
	}
	return nil
}

func splitLines(s string) []string { return strings.Split(strings.TrimRight(s, "\n"), "\n") }

func joinArgs(args []string) string { return strings.Join(args, " ") }

// networkPolicyGone waits until the Quarantine's NetworkPolicy is deleted.
func (d *demo) networkPolicyGone(timeout time.Duration) error {
	return d.poll(timeout, "NetworkPolicy removed", func(ctx context.Context) error {
		err := d.cluster.Client.Get(ctx, client.ObjectKey{Namespace: shopNS, Name: "bulkhead-" + attacked.quarantine}, &networkingv1.NetworkPolicy{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("still there")
		}
		return err
	})
}
