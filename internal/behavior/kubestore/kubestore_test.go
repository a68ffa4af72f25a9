package kubestore

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/bulkhead-dev/bulkhead/internal/behavior"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

func TestStore(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	start := time.Unix(1e9, 0)
	now := start.Add(3 * time.Hour) // c, started at +2h, is still learning
	s := &Store{Client: c, Reader: c, Namespace: "bulkhead-system", Now: func() time.Time { return now }}
	keys := make([]behavior.Key, 0, 3)
	for i, h := range []string{"a", "b", "c"} {
		k := behavior.Key{Namespace: "shop", Owner: "Deployment/web", TemplateHash: h}
		keys = append(keys, k)
		b := behavior.NewBaseline(k, behavior.Config{}, start.Add(time.Duration(i)*time.Hour))
		b.Learn(&detector.BehaviorEvent{Syscalls: []string{"read", "write"}}, &behavior.Stream{}, nil)
		if err := s.Save(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := s.Save(ctx, b); err != nil { // update in place
			t.Fatal(err)
		}
	}
	other := behavior.NewBaseline(behavior.Key{Namespace: "shop", Owner: "Deployment/db", TemplateHash: "a"}, behavior.Config{}, start)
	if err := s.Save(ctx, other); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, "shop", "Deployment/web")
	if err != nil {
		t.Fatal(err)
	}
	// Only the two newest revisions are kept.
	if len(got) != Keep || !has(got, keys[1]) || !has(got, keys[2]) {
		t.Fatalf("loaded %v, want the baselines of b and c", got)
	}
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: "bulkhead-system", Name: Name(keys[2])}, &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Labels[LabelManagedBy] != "bulkhead" || cm.Annotations[AnnoWorkload] != keys[2].String() || len(cm.BinaryData[DataKey]) == 0 {
		t.Errorf("ConfigMap metadata %v %v, data %d bytes", cm.Labels, cm.Annotations, len(cm.BinaryData[DataKey]))
	}
	// Once c has learned, nothing is scored against b: it goes.
	now = start.Add(48 * time.Hour)
	last := got[0]
	if last.Key != keys[2] {
		last = got[1]
	}
	if err := s.Save(ctx, last); err != nil {
		t.Fatal(err)
	}
	if got, err = s.Load(ctx, "shop", "Deployment/web"); err != nil || len(got) != 1 || got[0].Key != keys[2] {
		t.Fatalf("after c learned: loaded %v, %v; want only c", got, err)
	}
	if n := len(cm.BinaryData[DataKey]); n > behavior.MaxStoredBytes {
		t.Errorf("stored %d bytes, over %d", n, behavior.MaxStoredBytes)
	}
	s.MaxBytes = 100
	if err := s.Save(ctx, other); err == nil {
		t.Error("saving over MaxBytes: want an error")
	}
}

func has(bs []*behavior.Baseline, k behavior.Key) bool {
	for _, b := range bs {
		if b.Key == k {
			return true
		}
	}
	return false
}

func TestResolver(t *testing.T) {
	ctl := true
	pod := func(name string, labels map[string]string, kind, owner string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: labels}}
		if kind != "" {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: kind, Name: owner, Controller: &ctl}}
		}
		return p
	}
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(
		pod("web-7f9c-x", map[string]string{"pod-template-hash": "7f9c"}, "ReplicaSet", "web-7f9c"),
		pod("db-0", map[string]string{"controller-revision-hash": "db-5d"}, "StatefulSet", "db"),
		pod("debug", nil, "", ""),
	).Build()
	r := Resolver{Reader: c}
	for name, want := range map[string]behavior.Key{
		"web-7f9c-x": {Namespace: "shop", Owner: "Deployment/web", TemplateHash: "7f9c"},
		"db-0":       {Namespace: "shop", Owner: "StatefulSet/db", TemplateHash: "db-5d"},
		"debug":      {Namespace: "shop", Owner: "Pod/debug"},
	} {
		got, err := r.Resolve(context.Background(), "shop", name)
		if err != nil || got != want {
			t.Errorf("%s: %+v (%v), want %+v", name, got, err, want)
		}
	}
	if _, err := r.Resolve(context.Background(), "shop", "gone"); !errors.Is(err, behavior.ErrUnknownPod) {
		t.Errorf("missing pod: %v, want ErrUnknownPod", err)
	}
}
