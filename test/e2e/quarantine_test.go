//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// A Quarantine written as YAML and applied with kubectl, released with
// released: true.
func TestQuarantineFromYAMLReleasedTrue(t *testing.T) {
	s := newScenario(t)
	c := s.containShopByHand()
	s.kubectl("", "patch", "quarantine", c.name, "-n", s.ns, "--type=merge", "-p", `{"spec":{"released":true}}`)
	q := s.waitPhase(c.name, securityv1alpha1.PhaseReleased)
	for _, a := range q.Status.Actions {
		if a.State != securityv1alpha1.ActionReverted {
			t.Errorf("action %s is %s after release, want Reverted: %s", a.Type, a.State, a.Message)
		}
	}
	s.checkRestored(c)
}

// The same, released by deleting the Quarantine: the finalizer undoes
// everything before the object goes.
func TestQuarantineFromYAMLReleasedByDelete(t *testing.T) {
	s := newScenario(t)
	c := s.containShopByHand()
	s.kubectl("", "delete", "quarantine", c.name, "-n", s.ns, "--wait=false")
	s.eventually(60*time.Second, "Quarantine "+c.name+" gone after release", func(ctx context.Context) error {
		q, err := s.quarantine(ctx, c.name)
		if err == nil {
			return fmt.Errorf("still there, phase %s, actions %s", q.Status.Phase, actionStates(q))
		}
		return client.IgnoreNotFound(err)
	})
	s.checkRestored(c)
}

// contained is what containShopByHand did.
type contained struct {
	name, pod, node string
	replicas        int32
	probe           string
	// podUIDs are the shop pods before containment; restored pods are new.
	podUIDs map[string]bool
}

// containShopByHand runs a 3-replica shop pinned to one node, applies a
// Quarantine YAML with kubectl (Isolate, ScaleToZero, CordonNode) on one
// of its pods, and checks each action on the API objects — including that
// the real scheduler no longer places a pod on the cordoned node.
func (s *scenario) containShopByHand() contained {
	s.t.Helper()
	node := env.cluster.Nodes[1]
	pods := s.deployShop(3, node)
	c := contained{name: "shop-incident", pod: pods[0].Name, node: node, replicas: 3, probe: "probe", podUIDs: map[string]bool{}}
	for _, p := range pods {
		c.podUIDs[string(p.UID)] = true
	}
	s.kubectl(fmt.Sprintf(`apiVersion: security.bulkhead.dev/v1alpha1
kind: Quarantine
metadata:
  name: %s
  namespace: %s
spec:
  target: {kind: Pod, name: %s}
  actions:
  - {type: Isolate, isolate: {allowDNS: true}}
  - {type: ScaleToZero}
  - {type: CordonNode}
  reason:
    summary: "e2e: contained by hand"
`, c.name, s.ns, c.pod), "apply", "-f", "-")

	q := s.waitPhase(c.name, securityv1alpha1.PhaseContained)
	requireActionApplied(s.t, q, securityv1alpha1.ActionIsolate)
	scale := requireActionApplied(s.t, q, securityv1alpha1.ActionScaleToZero)
	if scale.OriginalReplicas == nil || *scale.OriginalReplicas != c.replicas {
		s.t.Fatalf("ScaleToZero recorded originalReplicas %v, want %d", scale.OriginalReplicas, c.replicas)
	}
	requireActionApplied(s.t, q, securityv1alpha1.ActionCordonNode)
	if q.Status.Target == nil || q.Status.Target.Node != node || q.Status.Target.Owner != "Deployment/shop" {
		s.t.Fatalf("status.target %+v, want node %s and owner Deployment/shop", q.Status.Target, node)
	}
	s.eventually(10*time.Second, "owner scaled to zero", func(ctx context.Context) error {
		r, err := s.replicas(ctx)
		if err != nil || r != 0 {
			return fmt.Errorf("replicas %d %v", r, err)
		}
		return nil
	})
	s.eventually(30*time.Second, "ReplicaSet controller removed every shop pod", func(ctx context.Context) error {
		var list corev1.PodList
		if err := s.c.List(ctx, &list, client.InNamespace(s.ns), client.MatchingLabels{"app": "shop"}); err != nil {
			return err
		}
		if len(list.Items) != 0 {
			return fmt.Errorf("%d shop pods left", len(list.Items))
		}
		return nil
	})
	s.eventually(10*time.Second, "node "+node+" cordoned and tainted", func(ctx context.Context) error {
		cordoned, err := nodeCordoned(ctx, node)
		if err == nil && !cordoned {
			err = fmt.Errorf("not cordoned")
		}
		return err
	})
	// Isolation is on the contained pod, which ScaleToZero may already have
	// deleted (a target gone after ScaleToZero stays Contained): then the
	// NetworkPolicy must still be there.
	s.eventually(10*time.Second, "contained pod isolated (or gone) and its NetworkPolicy in place", func(ctx context.Context) error {
		err := s.c.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: c.pod}, &corev1.Pod{})
		if apierrors.IsNotFound(err) {
			return s.c.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: "bulkhead-" + c.name}, &networkingv1.NetworkPolicy{})
		}
		if err != nil {
			return err
		}
		return s.checkIsolated(ctx, c.pod, c.name)
	})
	// The real scheduler honours the cordon: a pod pinned to the node waits.
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: c.probe, Namespace: s.ns},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{"kubernetes.io/hostname": node},
			Containers:   []corev1.Container{{Name: "probe", Image: "registry.example/probe:1.0"}},
		},
	}
	if err := s.c.Create(env.ctx, probe); err != nil {
		s.t.Fatal(err)
	}
	s.consistently(2*time.Second, "scheduler keeps a pod pinned to the cordoned node Pending", func(ctx context.Context) error {
		var p corev1.Pod
		if err := s.c.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: c.probe}, &p); err != nil {
			return err
		}
		if p.Spec.NodeName != "" {
			return fmt.Errorf("probe scheduled onto %s while it is cordoned", p.Spec.NodeName)
		}
		return nil
	})
	return c
}

// checkRestored: the ReplicaSet controller brings the replicas back, the
// scheduler uses the uncordoned node again (every shop pod and the waiting
// probe land on it), and the isolation is gone.
func (s *scenario) checkRestored(c contained) {
	s.t.Helper()
	s.eventually(30*time.Second, "node "+c.node+" uncordoned and untainted", func(ctx context.Context) error {
		cordoned, err := nodeCordoned(ctx, c.node)
		if err == nil && cordoned {
			err = fmt.Errorf("still cordoned")
		}
		return err
	})
	s.eventually(30*time.Second, "Deployment shop back to its replicas", func(ctx context.Context) error {
		r, err := s.replicas(ctx)
		if err != nil || r != c.replicas {
			return fmt.Errorf("replicas %d %v", r, err)
		}
		return nil
	})
	for _, p := range s.waitShopRunning(c.replicas, c.node) {
		if c.podUIDs[string(p.UID)] {
			s.t.Fatalf("pod %s survived ScaleToZero: the restored pods should be new", p.Name)
		}
	}
	s.eventually(30*time.Second, "probe scheduled onto "+c.node+" and Running", func(ctx context.Context) error {
		var p corev1.Pod
		if err := s.c.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: c.probe}, &p); err != nil {
			return err
		}
		if p.Spec.NodeName != c.node || p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("probe on %q, %s", p.Spec.NodeName, p.Status.Phase)
		}
		return nil
	})
	s.eventually(10*time.Second, "no NetworkPolicy and no quarantine label left", func(ctx context.Context) error {
		var pods corev1.PodList
		if err := s.c.List(ctx, &pods, client.InNamespace(s.ns), client.HasLabels{securityv1alpha1.QuarantineLabel}); err != nil {
			return err
		}
		if len(pods.Items) != 0 {
			return fmt.Errorf("pod %s still labelled", pods.Items[0].Name)
		}
		var nps networkingv1.NetworkPolicyList
		if err := s.c.List(ctx, &nps, client.InNamespace(s.ns)); err != nil {
			return err
		}
		if len(nps.Items) != 0 {
			return fmt.Errorf("NetworkPolicy %s left", nps.Items[0].Name)
		}
		return nil
	})
}
