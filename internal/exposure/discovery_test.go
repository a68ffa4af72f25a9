package exposure

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// mapper answers RESTMapping from err, counting calls.
type mapper struct {
	apimeta.RESTMapper
	err   error
	calls int
}

func (m *mapper) RESTMapping(gk schema.GroupKind, versions ...string) (*apimeta.RESTMapping, error) {
	m.calls++
	if m.err != nil {
		return nil, m.err
	}
	return &apimeta.RESTMapping{GroupVersionKind: gk.WithVersion(versions[0])}, nil
}

// reader counts reads and returns one report.
type reader struct{ lists int }

func (r *reader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return nil
}

func (r *reader) List(_ context.Context, list client.ObjectList, _ ...client.ListOption) error {
	r.lists++
	l := list.(*unstructured.UnstructuredList)
	l.Items = []unstructured.Unstructured{{Object: map[string]any{
		"report": map[string]any{"summary": map[string]any{"criticalCount": int64(1), "highCount": int64(0)}}}}}
	return nil
}

func TestLazyReportsDiscoversOnUse(t *testing.T) {
	now := time.Unix(0, 0)
	m := &mapper{err: errors.New("dial tcp 127.0.0.1:6443: connect: connection refused")}
	r := &reader{}
	lazy := &LazyReports{Mapper: m, Reader: r, Recheck: time.Minute, Now: func() time.Time { return now }}
	a, err := NewAssessor(lazy)
	if err != nil {
		t.Fatal(err)
	}
	if m.calls != 0 {
		t.Fatal("discovery ran before the first read")
	}
	p := &corev1.Pod{}
	p.Namespace, p.Name = "default", "web"

	// API server unreachable: an error, asked again on the next read.
	if _, ok, err := a.Vulnerabilities(context.Background(), p); err == nil || ok {
		t.Fatalf("unreachable API: ok %v, err %v", ok, err)
	}
	_, _, _ = a.Vulnerabilities(context.Background(), p)
	if m.calls != 2 || r.lists != 0 {
		t.Fatalf("discovery calls %d, lists %d; want 2, 0", m.calls, r.lists)
	}

	// Not served (Trivy Operator absent): nothing to weigh, no error, and
	// discovery is not asked again until Recheck has passed.
	m.err = &apimeta.NoKindMatchError{GroupKind: VulnerabilityReportGVK.GroupKind()}
	for range 3 {
		if _, ok, err := a.Vulnerabilities(context.Background(), p); err != nil || ok {
			t.Fatalf("absent API: ok %v, err %v", ok, err)
		}
	}
	if m.calls != 3 || r.lists != 0 {
		t.Fatalf("discovery calls %d, lists %d; want 3, 0", m.calls, r.lists)
	}

	// Trivy Operator installed later: found after Recheck, then read.
	m.err = nil
	now = now.Add(time.Minute)
	adj, ok, err := a.Vulnerabilities(context.Background(), p)
	if err != nil || !ok || adj.Delta != CriticalDelta {
		t.Fatalf("served API: %+v, ok %v, err %v", adj, ok, err)
	}
	_, _, _ = a.Vulnerabilities(context.Background(), p)
	if m.calls != 4 || r.lists != 2 {
		t.Fatalf("discovery calls %d, lists %d; want 4 (served is remembered), 2", m.calls, r.lists)
	}
}
