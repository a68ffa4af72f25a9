// Package kit is the harness the chaos, flood and bench suites share: a local
// control plane (test/framework/localcluster) with Bulkhead installed from
// config/, managers started through localcluster's launcher (which can
// SIGKILL and restart them, or run two with leader election), an API-server
// restart, fast creation of ReplicaSets with their pods, and load policies.
package kit

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/bulkhead-dev/bulkhead/test/framework"
	"github.com/bulkhead-dev/bulkhead/test/framework/localcluster"
)

// Detector is the external detector name the suites post scores for.
const Detector = "load-model"

// Env is a running cluster with Bulkhead installed.
type Env struct {
	Ctx     context.Context
	Cluster *localcluster.Cluster
	Install *localcluster.Install
	// Fast is an admin clientset with a high QPS for setting up load.
	Fast  kubernetes.Interface
	Creds *localcluster.IngestCredentials
	Logf  func(format string, args ...any)
	// ManagerEnv is added to the environment of managers started after.
	ManagerEnv []string
}

// Start boots a cluster with nodes kwok nodes and installs Bulkhead.
func Start(ctx context.Context, nodes int, logf func(string, ...any)) (*Env, error) {
	c, err := localcluster.Start(ctx, localcluster.Options{Nodes: nodes, Logf: logf})
	if err != nil {
		return nil, err
	}
	e := &Env{Ctx: ctx, Cluster: c, Logf: logf}
	inst, err := c.InstallBulkhead(ctx, framework.RepoRoot())
	if err != nil {
		e.Stop()
		return nil, err
	}
	e.Install = inst
	cfg := rest.CopyConfig(c.Config)
	cfg.QPS, cfg.Burst = 2000, 4000
	if e.Fast, err = kubernetes.NewForConfig(cfg); err != nil {
		e.Stop()
		return nil, err
	}
	if e.Creds, err = c.IngestCredentials("load", Detector, "falco"); err != nil {
		e.Stop()
		return nil, err
	}
	return e, nil
}

// Stop stops the cluster, the managers started on it included.
func (e *Env) Stop() { e.Cluster.Stop() }

// StartManager starts a manager named name (its log and kubeconfig) with
// ingestion on, metrics off, extra replacing the Deployment's flags of the
// same name. The suites' load comes from one loopback address, so the
// per-address limits before authentication are off unless extra sets them.
func (e *Env) StartManager(name string, extra ...string) (*localcluster.Manager, error) {
	return e.Cluster.StartManager(e.Ctx, e.Install, localcluster.ManagerOptions{
		Name:   name,
		Args:   append([]string{"--metrics-bind-address=0", "--ingest-rate-per-address=-1", "--ingest-max-connections-per-address=-1"}, extra...),
		Env:    e.ManagerEnv,
		Ingest: e.Creds,
	})
}

// RestartAPIServer kills (SIGKILL when kill, else SIGTERM) and restarts
// the cluster's kube-apiserver; it returns how long the API was down.
func (e *Env) RestartAPIServer(kill bool) (time.Duration, error) {
	return e.Cluster.RestartAPIServer(e.Ctx, kill)
}

// Namespace creates a namespace with labels.
func (e *Env) Namespace(name string, labels map[string]string) error {
	_, err := e.Fast.CoreV1().Namespaces().Create(e.Ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	return err
}

// Workload is a ReplicaSet and the pods created for it.
type Workload struct {
	Namespace, Name string
	UID             string
	Replicas        int32
	Pods            []string
}

// CreateWorkloads creates count ReplicaSets of replicas pods each in ns,
// labelled app=<app>. The pods are created here, owned by their ReplicaSet
// and bound to nodes round-robin, instead of by kube-controller-manager at
// its 20 requests/s through the scheduler. The ReplicaSet's template names
// a ServiceAccount that does not exist, so the ReplicaSet controller cannot
// race these creations with its own pods (admission refuses them); it still
// counts, scales and deletes the pods it owns.
func (e *Env) CreateWorkloads(ns, prefix, app string, count int, replicas int32, workers int) ([]*Workload, error) {
	ws := make([]*Workload, count)
	var created atomic.Int64
	nodes := e.Cluster.Nodes
	start := time.Now()
	err := Parallel(workers, count, func(i int) error {
		w, err := e.createWorkload(ns, fmt.Sprintf("%s-%d", prefix, i), app, replicas, nodes, i)
		if err != nil {
			return err
		}
		ws[i] = w
		if n := created.Add(int64(replicas)); n%2000 < int64(replicas) {
			e.Logf("  %d pods created (%s)", n, time.Since(start).Round(time.Second))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ws, nil
}

// Parallel calls f(i) for every i in [0, n) from workers goroutines. Once
// an f returns an error no new index is handed out; the first error is
// returned when all have finished.
func Parallel(workers, n int, f func(i int) error) error {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || firstErr.Load() != nil {
					return
				}
				if err := f(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	err, _ := firstErr.Load().(error)
	return err
}

func (e *Env) createWorkload(ns, name, app string, replicas int32, nodes []string, i int) (*Workload, error) {
	labels := map[string]string{"app": app, "workload": name}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       withServiceAccount(podSpec(""), "kit-no-such-serviceaccount"),
			},
		},
	}
	rs, err := e.Fast.AppsV1().ReplicaSets(ns).Create(e.Ctx, rs, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("ReplicaSet %s/%s: %w", ns, name, err)
	}
	w := &Workload{Namespace: ns, Name: name, UID: string(rs.UID), Replicas: replicas}
	for j := range replicas {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: fmt.Sprintf("%s-%d", name, j), Namespace: ns, Labels: labels,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: name, UID: rs.UID,
					Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
			},
			Spec: podSpec(nodes[(i*int(replicas)+int(j))%len(nodes)]),
		}
		if _, err := e.Fast.CoreV1().Pods(ns).Create(e.Ctx, pod, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("pod %s/%s: %w", ns, pod.Name, err)
		}
		w.Pods = append(w.Pods, pod.Name)
	}
	return w, nil
}

// Pod creates a bare pod (no owner) bound to a node.
func (e *Env) Pod(ns, name string, labels map[string]string, node string) error {
	_, err := e.Fast.CoreV1().Pods(ns).Create(e.Ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec:       podSpec(node),
	}, metav1.CreateOptions{})
	return err
}

func withServiceAccount(s corev1.PodSpec, sa string) corev1.PodSpec {
	s.ServiceAccountName = sa
	return s
}

func podSpec(node string) corev1.PodSpec {
	return corev1.PodSpec{
		NodeName:    node,
		Tolerations: []corev1.Toleration{{Key: "kwok.x-k8s.io/node", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
		Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1.0",
			SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), RunAsNonRoot: ptr.To(true),
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}}},
	}
}

// Policy is an Enforce ThreatPolicy for the load detector selecting
// namespaces labelled load=<sel> and pods app=<app>.
func Policy(name, sel, app string, sustain, maxActive int, actions string) framework.Policy {
	return framework.Policy{
		Name:                 name,
		NamespaceLabels:      map[string]string{"load": sel},
		PodLabels:            map[string]string{"app": app},
		Detectors:            []framework.Detector{{Name: Detector, Weight: 100}},
		Sustain:              sustain,
		Response:             []framework.Step{{MinScore: "0.80", Actions: actions}},
		MaxActiveQuarantines: maxActive,
		Cooldown:             "1s",
	}
}

// Apply server-side applies YAML as the admin.
func (e *Env) Apply(yaml string) error {
	_, err := e.Cluster.Kubectl(e.Ctx, strings.NewReader(yaml), "apply", "--server-side", "--field-manager=load", "-f", "-")
	return err
}
