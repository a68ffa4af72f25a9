package ingest

import (
	"context"
	"net"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// Issue 15 item 1: a new leader's slice replaces the old leader's address
// (one endpoint, never both), and the slice is what routes the Service.
func TestAdvertiserReplacesTheOldLeader(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	publish := func(ip string, port int) {
		t.Helper()
		a := &Advertiser{Client: c, Namespace: "bulkhead-system", Service: "bulkhead-ingest", Address: ip}
		if err := a.Publish(ctx, &net.TCPAddr{IP: net.ParseIP(ip), Port: port}); err != nil {
			t.Fatal(err)
		}
	}
	publish("10.0.0.1", 8444)
	publish("10.0.0.2", 8444)
	var s discoveryv1.EndpointSlice
	if err := c.Get(ctx, client.ObjectKey{Namespace: "bulkhead-system", Name: "bulkhead-ingest"}, &s); err != nil {
		t.Fatal(err)
	}
	if s.Labels[discoveryv1.LabelServiceName] != "bulkhead-ingest" || s.Labels[discoveryv1.LabelManagedBy] != EndpointManagedBy {
		t.Errorf("labels %v", s.Labels)
	}
	if len(s.Endpoints) != 1 || len(s.Endpoints[0].Addresses) != 1 || s.Endpoints[0].Addresses[0] != "10.0.0.2" {
		t.Fatalf("endpoints %+v, want only the new leader 10.0.0.2", s.Endpoints)
	}
	if s.AddressType != discoveryv1.AddressTypeIPv4 || len(s.Ports) != 1 || *s.Ports[0].Port != 8444 || *s.Ports[0].Name != PortName {
		t.Errorf("address type %s, ports %+v", s.AddressType, s.Ports)
	}
	a := &Advertiser{Client: c, Namespace: "bulkhead-system", Service: "bulkhead-ingest", Address: "fd00::5"}
	if sl, err := a.Slice(8444); err != nil || *sl.AddressType != discoveryv1.AddressTypeIPv6 {
		t.Errorf("IPv6: %v", err)
	}
	a.Address = "pod-a"
	if _, err := a.Slice(8444); err == nil {
		t.Error("a host name was accepted as the advertise address")
	}
}

// Issue 15 item 1: a replay id accepted by the old leader was accepted
// again by the new one. Restored ids are refused until the window ends.
func TestReplayIDsSurviveHandover(t *testing.T) {
	now := time.Now()
	old := newReplayGuard(time.Hour, 100)
	old.now = func() time.Time { return now }
	if _, ok := old.reserve([]string{"cred/a", "cred/b"}); !ok {
		t.Fatal("fresh ids refused")
	}
	ids := old.snapshot(10)
	if len(ids) != 2 || ids[0].Hash == "cred/a" {
		t.Fatalf("snapshot %+v: want two hashed ids", ids)
	}
	next := newReplayGuard(time.Hour, 100)
	next.now = func() time.Time { return now.Add(time.Minute) }
	if n := next.restore(append(ids, ReplayID{Hash: "short"}, ReplayID{Hash: replayHash("cred/old"), At: now.Add(-2 * time.Hour).Unix()})); n != 2 {
		t.Fatalf("restored %d ids, want 2 (bad and expired ones dropped)", n)
	}
	if i, ok := next.reserve([]string{"cred/c", "cred/b"}); ok || i != 1 {
		t.Fatalf("a replay of the old leader's id: ok=%v at %d, want refused at 1", ok, i)
	}
	if _, ok := next.reserve([]string{"cred/c", "cred/old"}); !ok {
		t.Fatal("new ids or ones whose window ended were refused")
	}
	if got := next.snapshot(10); len(got) != 4 {
		t.Errorf("the successor's snapshot %+v: want its own 2 and the restored 2", got)
	}
	next.now = func() time.Time { return now.Add(2 * time.Hour) }
	if _, ok := next.reserve([]string{"cred/a"}); !ok {
		t.Error("a restored id was refused after the window")
	}
}
