package containment

import (
	"errors"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// countingMapper serves no third-party deny kind and counts the lookups
// (each one a discovery request in the manager), or fails them all.
type countingMapper struct {
	apimeta.RESTMapper
	lookups int
	fail    error
}

func (m *countingMapper) RESTMapping(gk schema.GroupKind, versions ...string) (*apimeta.RESTMapping, error) {
	m.lookups++
	if m.fail != nil {
		return nil, m.fail
	}
	return m.RESTMapper.RESTMapping(gk, versions...)
}

// Issue 17: the deny kinds served are asked once per TTL, not once per
// Isolate (the RESTMapper sent a discovery request for each kind not
// served, under its lock, every time); a failed lookup is not remembered.
func TestServedKindsAskedOncePerTTL(t *testing.T) {
	m := &countingMapper{RESTMapper: apimeta.NewDefaultRESTMapper(nil)}
	now := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	e := &Engine{Client: fake.NewClientBuilder().WithRESTMapper(m).Build(), Now: func() time.Time { return now },
		Served: &ServedKinds{TTL: 30 * time.Second}}
	for range 3 {
		got, err := e.servedFlavors()
		if err != nil || len(got) != 0 {
			t.Fatalf("servedFlavors = %v, %v; want none served", got, err)
		}
	}
	if m.lookups != len(DenyFlavors) {
		t.Fatalf("%d lookups for 3 calls within the TTL, want %d (one per kind)", m.lookups, len(DenyFlavors))
	}
	now = now.Add(31 * time.Second)
	if _, err := e.servedFlavors(); err != nil {
		t.Fatal(err)
	}
	if m.lookups != 2*len(DenyFlavors) {
		t.Fatalf("%d lookups after the TTL, want %d", m.lookups, 2*len(DenyFlavors))
	}

	m.fail, now = errors.New("discovery down"), now.Add(time.Minute)
	if _, err := e.servedFlavors(); err == nil {
		t.Fatal("a failed lookup returned no error")
	}
	m.fail = nil
	if _, err := e.servedFlavors(); err != nil {
		t.Fatalf("the lookup after a failure: %v", err)
	}
	if m.lookups != 3*len(DenyFlavors)+1 {
		t.Fatalf("%d lookups, want the failure not remembered (%d)", m.lookups, 3*len(DenyFlavors)+1)
	}

	// Without a ServedKinds every call asks.
	e.Served, m.lookups = nil, 0
	for range 2 {
		if _, err := e.servedFlavors(); err != nil {
			t.Fatal(err)
		}
	}
	if m.lookups != 2*len(DenyFlavors) {
		t.Fatalf("%d lookups without a cache, want %d", m.lookups, 2*len(DenyFlavors))
	}
}
