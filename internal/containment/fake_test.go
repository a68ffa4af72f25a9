package containment

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/managedfields"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// fakeCluster is a controller-runtime fake client that counts every write
// the engine makes, for the per-action unit tests: apply, apply again
// (no writes), revert, and revert of an object someone changed meanwhile.
type fakeCluster struct {
	t      *testing.T
	c      client.Client
	e      *Engine
	writes atomic.Int64
}

const ns = "web"

func newFakeCluster(t *testing.T, objs ...client.Object) *fakeCluster {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := securityv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	f := &fakeCluster{t: t}
	// The deduced type converter: the fake's client-go converter fails on
	// an empty NetworkPolicy (".status: field not declared in schema") and
	// its fallback then cannot merge the two, so server-side apply of a
	// NetworkPolicy errors on the default fake.
	base := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithTypeConverters(managedfields.NewDeducedTypeConverter()).Build()
	count := func() { f.writes.Add(1) }
	f.c = interceptor.NewClient(base, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			count()
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			count()
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
			count()
			return c.Patch(ctx, obj, p, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			count()
			return c.Delete(ctx, obj, opts...)
		},
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			count()
			return c.Apply(ctx, obj, opts...)
		},
		SubResourceCreate: func(ctx context.Context, c client.Client, sub string, obj, body client.Object, opts ...client.SubResourceCreateOption) error {
			count()
			return c.SubResource(sub).Create(ctx, obj, body, opts...)
		},
		// The fake serves /scale only as a typed autoscaling/v1 Scale; the
		// engine reads and writes it as unstructured, like any kind.
		SubResourceGet: func(ctx context.Context, c client.Client, sub string, obj, body client.Object, opts ...client.SubResourceGetOption) error {
			u, ok := body.(*unstructured.Unstructured)
			if sub != "scale" || !ok {
				return c.SubResource(sub).Get(ctx, obj, body, opts...)
			}
			sc := &autoscalingv1.Scale{}
			if err := c.SubResource(sub).Get(ctx, obj.DeepCopyObject().(client.Object), sc, opts...); err != nil {
				return err
			}
			m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(sc)
			u.Object = m
			return err
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			count()
			o := &client.SubResourceUpdateOptions{}
			o.ApplyOptions(opts)
			if u, ok := o.SubResourceBody.(*unstructured.Unstructured); ok && sub == "scale" {
				sc := &autoscalingv1.Scale{}
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, sc); err != nil {
					return err
				}
				return c.SubResource(sub).Update(ctx, obj, client.WithSubResourceBody(sc))
			}
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			count()
			return c.SubResource(sub).Patch(ctx, obj, p, opts...)
		},
	})
	f.e = &Engine{Client: f.c, Reader: f.c, MinSchedulableNodes: 1}
	return f
}

// scope resolves the target as every controller pass does; nil Target when
// it is gone.
func (f *fakeCluster) scope(q *securityv1alpha1.Quarantine) *Scope {
	f.t.Helper()
	t, err := f.e.Resolve(context.Background(), q)
	if err != nil && !errors.Is(err, ErrTargetNotFound) {
		f.t.Fatal(err)
	}
	return &Scope{Q: q, Target: t}
}

// apply plans (first time) and applies, returning the writes it made.
func (f *fakeCluster) apply(q *securityv1alpha1.Quarantine, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, int64) {
	f.t.Helper()
	s := f.scope(q)
	if st.State == "" {
		f.e.Plan(s, a, st)
	}
	before := f.writes.Load()
	o, err := f.e.Apply(context.Background(), s, a, st)
	if err != nil {
		f.t.Fatalf("apply %s: %v", a.Type, err)
	}
	return o, f.writes.Load() - before
}

func (f *fakeCluster) revert(q *securityv1alpha1.Quarantine, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) Outcome {
	f.t.Helper()
	o, err := f.e.Revert(context.Background(), f.scope(q), a, st)
	if err != nil {
		f.t.Fatalf("revert %s: %v", a.Type, err)
	}
	return o
}

func (f *fakeCluster) get(obj client.Object, name string, namespace string) bool {
	f.t.Helper()
	err := f.c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, obj)
	if err != nil && !apierrors.IsNotFound(err) {
		f.t.Fatal(err)
	}
	return err == nil
}

func (f *fakeCluster) update(obj client.Object) {
	f.t.Helper()
	if err := f.c.Update(context.Background(), obj); err != nil {
		f.t.Fatal(err)
	}
}

// applyTwice applies once (which must write) and again on a fresh pass
// (which must not).
func (f *fakeCluster) applyTwice(q *securityv1alpha1.Quarantine, a securityv1alpha1.Action) *securityv1alpha1.ActionStatus {
	f.t.Helper()
	st := &securityv1alpha1.ActionStatus{}
	o, n := f.apply(q, a, st)
	if st.State != securityv1alpha1.ActionApplied || !o.Changed || n == 0 {
		f.t.Fatalf("first apply: state %s (%s), changed %v, %d writes", st.State, st.Message, o.Changed, n)
	}
	if st.AppliedAt == nil {
		f.t.Fatal("appliedAt not set")
	}
	o, n = f.apply(q, a, st)
	if st.State != securityv1alpha1.ActionApplied || o.Changed || o.Repaired || n != 0 {
		f.t.Fatalf("second apply: state %s (%s), changed %v, repaired %v, %d writes; want none", st.State, st.Message, o.Changed, o.Repaired, n)
	}
	return st
}

func quarantineOf(target securityv1alpha1.Target, a securityv1alpha1.Action) *securityv1alpha1.Quarantine {
	return &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Name: "q1", Namespace: ns, UID: "uid-q1"},
		Spec:       securityv1alpha1.QuarantineSpec{Target: target, Actions: []securityv1alpha1.Action{a}},
	}
}

// shop is a Deployment with 3 replicas, its ReplicaSet and one pod on n1,
// plus two schedulable worker nodes.
func shop() []client.Object {
	tr := true
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: ns, UID: "uid-dep"},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(3)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "shop"}}},
		},
	}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-rs", Namespace: ns, UID: "uid-rs",
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "shop", UID: "uid-dep", Controller: &tr}}},
		Spec: appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "shop", "pod-template-hash": "x"}}},
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-1", Namespace: ns, UID: "uid-pod",
			Labels:          map[string]string{"app": "shop", "pod-template-hash": "x"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "shop-rs", UID: types.UID("uid-rs"), Controller: &tr}}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "nginx"}}},
	}
	return []client.Object{dep, rs, pod,
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}},
	}
}

var podTarget = securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: "shop-1"}
