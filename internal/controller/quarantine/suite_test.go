package quarantine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
	"github.com/bulkhead-dev/bulkhead/internal/provenance"
	"github.com/bulkhead-dev/bulkhead/test/framework/testenv"
)

var (
	env    *testenv.Env
	direct client.WithWatch
	ctx    = context.Background()
)

func TestMain(m *testing.M) {
	e, err := testenv.Start(testenv.Options{ExtraCRDDirs: []string{filepath.Join(testenv.RepoRoot(), "internal", "containment", "testdata", "crds")}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	env = e
	direct, err = client.NewWithWatch(env.Config, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = env.Stop()
		os.Exit(1)
	}
	// A stand-in for the admission guard (GuardInstalled looks at its shape,
	// not its rules): hand-made destructive actions need one.
	if err := installGuard(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = env.Stop()
		os.Exit(1)
	}
	// Evidence Secrets are kept in the manager namespace.
	if err := direct.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: securityv1alpha1.DefaultManagerNamespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		fmt.Fprintln(os.Stderr, err)
		_ = env.Stop()
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

var errCrash = errors.New("injected crash: the manager died")

// writes counts the writes made through a client and, with failAfter >= 0,
// fails every write after the first failAfter, as a manager killed mid-pass.
type writes struct {
	n         atomic.Int64
	failAfter int64
}

func (w *writes) tick() error {
	n := w.n.Add(1)
	if w.failAfter >= 0 && n > w.failAfter {
		return errCrash
	}
	return nil
}

func (w *writes) client() client.Client {
	return interceptor.NewClient(direct, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if err := w.tick(); err != nil {
				return err
			}
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if err := w.tick(); err != nil {
				return err
			}
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
			if err := w.tick(); err != nil {
				return err
			}
			return c.Patch(ctx, obj, p, opts...)
		},
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			if err := w.tick(); err != nil {
				return err
			}
			return c.Apply(ctx, obj, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			if err := w.tick(); err != nil {
				return err
			}
			return c.Delete(ctx, obj, opts...)
		},
		SubResourceCreate: func(ctx context.Context, c client.Client, sub string, obj, body client.Object, opts ...client.SubResourceCreateOption) error {
			if err := w.tick(); err != nil {
				return err
			}
			return c.SubResource(sub).Create(ctx, obj, body, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			if err := w.tick(); err != nil {
				return err
			}
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			if err := w.tick(); err != nil {
				return err
			}
			return c.SubResource(sub).Patch(ctx, obj, p, opts...)
		},
	})
}

// recorder keeps event reasons.
type recorder struct {
	mu      sync.Mutex
	reasons []string
}

func (r *recorder) Eventf(regarding, _ runtime.Object, _, reason, _, _ string, _ ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	on := "Quarantine"
	if _, ok := regarding.(*corev1.Pod); ok {
		on = "Pod"
	}
	r.reasons = append(r.reasons, on+"/"+reason)
}

// count events with a reason on a kind (Quarantine or Pod).
func (r *recorder) count(on, reason string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, x := range r.reasons {
		if x == on+"/"+reason {
			n++
		}
	}
	return n
}

// testSigner is the manager's provenance key in this suite.
var testSigner, _ = provenance.New([]byte("0123456789abcdef0123456789abcdef"))

// guardName names the suite's stand-in admission guard.
const guardName = "quarantine-guard-standin"

func installGuard() error {
	vap := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: guardName, Labels: map[string]string{"app.kubernetes.io/name": "bulkhead"}},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: new(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{"security.bulkhead.dev"}, APIVersions: []string{"*"}, Resources: []string{"quarantines"}},
				},
			}}},
			Validations: []admissionregistrationv1.Validation{{Expression: "true"}},
		},
	}
	if err := direct.Create(ctx, vap); err != nil {
		return err
	}
	return direct.Create(ctx, guardBinding())
}

func guardBinding() *admissionregistrationv1.ValidatingAdmissionPolicyBinding {
	return &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: guardName, Labels: map[string]string{"app.kubernetes.io/name": "bulkhead"}},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: guardName,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}},
	}
}

func newReconciler(c client.Client) (*QuarantineReconciler, *recorder) {
	rec := &recorder{}
	return &QuarantineReconciler{
		Client: c, APIReader: direct, Recorder: rec, ManagerNamespace: securityv1alpha1.DefaultManagerNamespace,
		Recheck: time.Minute, Provenance: provenance.Fixed(testSigner),
	}, rec
}

// drive reconciles until cond holds after an error-free pass, as the
// controller's queue would. The Quarantine may be gone (nil) at the end.
func drive(t *testing.T, r *QuarantineReconciler, key client.ObjectKey, cond func(*securityv1alpha1.Quarantine) bool) *securityv1alpha1.Quarantine {
	t.Helper()
	var lastErr error
	for range 40 {
		_, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: key})
		lastErr = err
		q := getQ(t, key)
		if err == nil && cond(q) {
			return q
		}
	}
	q := getQ(t, key)
	b, _ := json.MarshalIndent(q, "", " ")
	t.Fatalf("did not converge (last error %v):\n%s", lastErr, b)
	return nil
}

func getQ(t *testing.T, key client.ObjectKey) *securityv1alpha1.Quarantine {
	t.Helper()
	q := &securityv1alpha1.Quarantine{}
	if err := direct.Get(ctx, key, q); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		t.Fatal(err)
	}
	return q
}

func phaseIs(p securityv1alpha1.QuarantinePhase) func(*securityv1alpha1.Quarantine) bool {
	return func(q *securityv1alpha1.Quarantine) bool { return q != nil && q.Status.Phase == p }
}

// released: Released and the finalizer dropped.
func released(q *securityv1alpha1.Quarantine) bool {
	return q != nil && q.Status.Phase == securityv1alpha1.PhaseReleased && len(q.Finalizers) == 0
}

var nsCounter atomic.Int64

// fixture is a namespace with a node, a Deployment, its ReplicaSet and pods
// (envtest runs no controllers, so the test makes the pods).
type fixture struct {
	ns   string
	node string
	dep  *appsv1.Deployment
	rs   *appsv1.ReplicaSet
	pods []*corev1.Pod
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func newFixture(t *testing.T, replicas int32) *fixture {
	t.Helper()
	return newFixtureIn(t, fmt.Sprintf("shop-%d", nsCounter.Add(1)), replicas)
}

// newFixtureIn is newFixture in a namespace of the caller's choosing.
func newFixtureIn(t *testing.T, namespace string, replicas int32) *fixture {
	t.Helper()
	f := &fixture{ns: namespace, node: "node-" + namespace}
	must(t, direct.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns}}))
	must(t, direct.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: f.node}}))
	labels := map[string]string{"app": "shop"}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}}}}
	f.dep = &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: f.ns},
		Spec:       appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl},
	}
	must(t, direct.Create(ctx, f.dep))
	rsLabels := map[string]string{"app": "shop", "pod-template-hash": "7f9c"}
	rsTmpl := tmpl.DeepCopy()
	rsTmpl.Labels = rsLabels
	f.rs = &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-7f9c", Namespace: f.ns, OwnerReferences: []metav1.OwnerReference{controllerRef(f.dep, "apps/v1", "Deployment")}},
		Spec:       appsv1.ReplicaSetSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: rsLabels}, Template: *rsTmpl},
	}
	must(t, direct.Create(ctx, f.rs))
	for i := range replicas {
		f.pods = append(f.pods, f.pod(t, fmt.Sprintf("shop-7f9c-%d", i), rsLabels, new(controllerRef(f.rs, "apps/v1", "ReplicaSet"))))
	}
	return f
}

func (f *fixture) pod(t *testing.T, name string, labels map[string]string, owner *metav1.OwnerReference) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns, Labels: labels},
		Spec: corev1.PodSpec{NodeName: f.node, Containers: []corev1.Container{{
			Name: "web", Image: "nginx:1.27", Args: []string{"--password=hunter2", "--port=80"},
			Env: []corev1.EnvVar{{Name: "DB_PASSWORD", Value: "s3cret"}},
		}}},
	}
	if owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	must(t, direct.Create(ctx, p))
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "web", Image: "nginx:1.27", Ready: true, ImageID: "docker.io/library/nginx@sha256:" + fmt.Sprintf("%064d", 1)}}
	must(t, direct.Status().Update(ctx, p))
	return p
}

func controllerRef(o client.Object, apiVersion, kind string) metav1.OwnerReference {
	t := true
	return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: o.GetName(), UID: o.GetUID(), Controller: &t}
}

func (f *fixture) quarantine(t *testing.T, name, pod string, actions ...securityv1alpha1.Action) client.ObjectKey {
	t.Helper()
	q := &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns},
		Spec: securityv1alpha1.QuarantineSpec{
			Target:  securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: pod},
			Actions: actions,
			Reason:  &securityv1alpha1.QuarantineReason{Detector: "behavior", Score: "0.97", Summary: "new binary /tmp/x spawned by nginx"},
		},
	}
	must(t, direct.Create(ctx, q))
	return client.ObjectKeyFromObject(q)
}

func act(t securityv1alpha1.ActionType) securityv1alpha1.Action {
	return securityv1alpha1.Action{Type: t}
}

// release sets spec.released, as `kubectl bulkhead release` does.
func release(t *testing.T, key client.ObjectKey) {
	t.Helper()
	q := getQ(t, key)
	base := q.DeepCopy()
	q.Spec.Released = new(true)
	must(t, direct.Patch(ctx, q, client.MergeFrom(base)))
}

func actionState(q *securityv1alpha1.Quarantine, at securityv1alpha1.ActionType) securityv1alpha1.ActionStatus {
	for _, s := range q.Status.Actions {
		if s.Type == at {
			return s
		}
	}
	return securityv1alpha1.ActionStatus{}
}

// snapshot is everything containment may touch in a fixture, for "exactly
// as before" comparisons.
func (f *fixture) snapshot(t *testing.T) string {
	t.Helper()
	return f.snapshotExcept(t, "")
}

// snapshotExcept leaves one pod out (one that cannot come back).
func (f *fixture) snapshotExcept(t *testing.T, skipPod string) string {
	t.Helper()
	type podView struct {
		Name        string
		Labels      map[string]string
		Annotations map[string]string
	}
	out := map[string]any{}
	pods := &corev1.PodList{}
	must(t, direct.List(ctx, pods, client.InNamespace(f.ns)))
	var pv []podView
	for _, p := range pods.Items {
		if p.Name == skipPod {
			continue
		}
		pv = append(pv, podView{p.Name, p.Labels, p.Annotations})
	}
	out["pods"] = pv
	d := &appsv1.Deployment{}
	must(t, direct.Get(ctx, client.ObjectKeyFromObject(f.dep), d))
	out["deployment"] = []any{*d.Spec.Replicas, d.Annotations}
	node := &corev1.Node{}
	must(t, direct.Get(ctx, client.ObjectKey{Name: f.node}, node))
	out["node"] = []any{node.Spec.Unschedulable, node.Spec.Taints, node.Annotations}
	nps := &networkingv1.NetworkPolicyList{}
	must(t, direct.List(ctx, nps, client.InNamespace(f.ns)))
	var names []string
	for _, np := range nps.Items {
		if np.DeletionTimestamp.IsZero() {
			names = append(names, np.Name)
		}
	}
	out["networkpolicies"] = names
	thirdParty := make([]string, 0, 2*len(containment.DenyFlavors))
	for _, fl := range containment.DenyFlavors {
		l := &unstructured.UnstructuredList{}
		l.SetGroupVersionKind(fl.GVK().GroupVersion().WithKind(fl.GVK().Kind + "List"))
		if fl.Namespaced() {
			must(t, direct.List(ctx, l, client.InNamespace(f.ns)))
		} else {
			must(t, direct.List(ctx, l, client.MatchingLabels{containment.QuarantineNamespaceLabel: f.ns}))
		}
		for _, u := range l.Items {
			thirdParty = append(thirdParty, u.GetKind()+"/"+u.GetName())
		}
	}
	out["thirdParty"] = thirdParty
	b, err := json.MarshalIndent(out, "", " ")
	must(t, err)
	return string(b)
}

func reqFor(key client.ObjectKey) reconcile.Request { return reconcile.Request{NamespacedName: key} }
