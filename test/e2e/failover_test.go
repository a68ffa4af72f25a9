//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/handover"
	"github.com/bulkhead-dev/bulkhead/internal/ingest"
	"github.com/bulkhead-dev/bulkhead/internal/ingestca"
	"github.com/bulkhead-dev/bulkhead/test/framework"
	"github.com/bulkhead-dev/bulkhead/test/framework/localcluster"
)

// failoverLease is the replicas' lease: short, so a killed leader's
// successor takes over within seconds.
const failoverLease = 4 * time.Second

// Issue 15 item 1: with two replicas the ingest Service selected both, but
// only the leader listens, and a failover lost streaks and replay ids.
// Two manager replicas run here: the ingest Service's EndpointSlice names
// only the leader; after the leader is killed it names the new leader
// within the lease and a few seconds; a sustain-2 policy's first signal
// went to the old leader and its second, sent to the address the slice
// names, contains the pod through the new one; the old leader's replay id
// is still refused.
func TestIngestFailover(t *testing.T) {
	s := newScenario(t)
	target := s.deployShop(1, "")[0].Name

	var svc corev1.Service
	if err := s.c.Get(env.ctx, client.ObjectKey{Namespace: env.install.Namespace, Name: ingestca.ServiceName}, &svc); err != nil {
		t.Fatal(err)
	}
	if len(svc.Spec.Selector) != 0 {
		t.Fatalf("the ingest Service selects %v: every replica, listening or not", svc.Spec.Selector)
	}

	// The suite's manager steps aside (SIGTERM releases its lease) for two
	// replicas of this test's own, and comes back at the end.
	env.manager.Stop(15 * time.Second)
	s.undo = append(s.undo, func() {
		if _, err := env.manager.Restart(env.ctx, 90*time.Second); err != nil {
			t.Errorf("restarting the suite's manager: %v", err)
		}
		slice := &discoveryv1.EndpointSlice{}
		slice.Namespace, slice.Name = env.install.Namespace, ingestca.ServiceName
		_ = s.c.Delete(context.Background(), slice)
	})
	// An EndpointSlice may not name a loopback address: each replica
	// listens on this host's own address, as a pod does on its IP.
	ip := hostAddress(t)
	start := func(name string) (*localcluster.Manager, string) {
		t.Helper()
		port, err := localcluster.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		m, err := env.cluster.StartManager(env.ctx, env.install, localcluster.ManagerOptions{Name: name, Ingest: env.creds, Args: []string{
			"--leader-elect", "--leader-elect-lease-duration=" + failoverLease.String(), "--leader-elect-renew-deadline=3s",
			"--leader-elect-retry-period=500ms", "--ingest-bind-address=" + addr, "--ingest-advertise-address=" + ip,
		}})
		if err != nil {
			t.Fatalf("starting %s: %v", name, err)
		}
		s.undo = append(s.undo, func() {
			if t.Failed() {
				t.Logf("===== %s log (last 8 KiB)\n%s", name, m.Logs(8<<10))
			}
			m.Stop(10 * time.Second)
		})
		return m, addr
	}
	a, aAddr := start("manager-a")
	s.eventually(30*time.Second, "the ingest EndpointSlice names manager-a "+aAddr, func(ctx context.Context) error {
		return endpointIs(ctx, s.c, aAddr)
	})
	_, bAddr := start("manager-b")
	s.consistently(3*time.Second, "the standby manager-b ("+bAddr+") is not an endpoint", func(ctx context.Context) error {
		return endpointIs(ctx, s.c, aAddr)
	})
	if code, _, err := (framework.Ingest{URL: "http://" + bAddr, Token: env.creds.Token}).PostScores(env.ctx, framework.Score{
		Namespace: s.ns, Pod: target, Detector: externalDetector, Score: 0.1}); err == nil {
		t.Fatalf("the standby accepted a signal (%d): it must not listen", code)
	}

	policy := "e2e-failover-" + s.ns[len(s.ns)-6:]
	s.applyPolicy(policy, s.policyYAML(policy, securityv1alpha1.ModeEnforce))
	s.waitPolicyReady(policy)

	first := failoverScore(s.ns, target, 0.95)
	s.postVia(aAddr, first, http.StatusAccepted)
	s.consistently(2*time.Second, "one signal is not sustained: no Quarantine yet", func(ctx context.Context) error {
		if q, err := s.quarantineFor(ctx, target); err == nil {
			return fmt.Errorf("Quarantine %s after a single signal (sustain: 2)", q.Name)
		}
		return nil
	})
	// The leader saves every 2 s; what it holds is saved before the kill.
	s.eventually(15*time.Second, "the leader saved the streak", func(ctx context.Context) error {
		var sec corev1.Secret
		if err := s.c.Get(ctx, client.ObjectKey{Namespace: env.install.Namespace, Name: handover.SecretName}, &sec); err != nil {
			return err
		}
		st, err := handover.Decode(sec.Data[handover.Key])
		if err != nil {
			return err
		}
		for _, sk := range st.Detection.Streaks {
			if sk.Namespace == s.ns && sk.Pod == target && sk.Policy == policy && sk.Streak == 1 {
				return nil
			}
		}
		return fmt.Errorf("no streak for %s/%s in %d saved", s.ns, target, len(st.Detection.Streaks))
	})

	killed := time.Now()
	a.Kill()
	logf("  ✗ manager-a killed (SIGKILL)")
	s.eventually(failoverLease+20*time.Second, "the ingest EndpointSlice names manager-b "+bAddr, func(ctx context.Context) error {
		return endpointIs(ctx, s.c, bAddr)
	})
	failover := time.Since(killed)
	logf("  ✓ failover: the EndpointSlice named the new leader %s after the kill (lease %s)", failover.Round(10*time.Millisecond), failoverLease)
	if failover > failoverLease+10*time.Second {
		t.Errorf("failover took %s, want within the lease %s and a few seconds", failover, failoverLease)
	}

	// The new leader refuses the old one's id and counts the streak on.
	s.postVia(bAddr, first, http.StatusConflict)
	s.postVia(bAddr, failoverScore(s.ns, target, 0.97), http.StatusAccepted)
	qname := s.waitQuarantineFor(target)
	q := s.waitPhase(qname, securityv1alpha1.PhaseContained)
	if q.Spec.Reason == nil || q.Spec.Reason.Policy != policy {
		t.Fatalf("Quarantine reason %+v, want policy %s", q.Spec.Reason, policy)
	}
	requireActionApplied(t, q, securityv1alpha1.ActionIsolate)
}

func failoverScore(ns, pod string, score float64) framework.Score {
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	return framework.Score{Namespace: ns, Pod: pod, Detector: externalDetector, Score: score,
		Reason: "e2e: failover", ID: hex.EncodeToString(id), Time: time.Now().UTC()}
}

// postVia posts sc to the manager at addr and requires the status want.
func (s *scenario) postVia(addr string, sc framework.Score, want int) {
	s.t.Helper()
	code, resp, err := (framework.Ingest{URL: "http://" + addr, Token: env.creds.Token}).PostScores(env.ctx, sc)
	if err != nil || code != want {
		s.t.Fatalf("POST /v1/scores to %s (id %s): %d %s %v, want %d", addr, sc.ID, code, resp, err, want)
	}
	logf("  → POST /v1/scores via %s score=%.2f id=%s: %d", addr, sc.Score, sc.ID, code)
}

// endpointIs checks that the ingest Service's EndpointSlice names exactly
// addr (host:port), ready, as its one endpoint.
func endpointIs(ctx context.Context, c client.Client, addr string) error {
	var slices discoveryv1.EndpointSliceList
	if err := c.List(ctx, &slices, client.InNamespace(env.install.Namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: ingestca.ServiceName}); err != nil {
		return err
	}
	var got []string
	for _, sl := range slices.Items {
		for _, ep := range sl.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, ip := range ep.Addresses {
				for _, p := range sl.Ports {
					if p.Port != nil && p.Name != nil && *p.Name == ingest.PortName {
						got = append(got, net.JoinHostPort(ip, strconv.Itoa(int(*p.Port))))
					}
				}
			}
		}
	}
	if len(got) != 1 || got[0] != addr {
		return fmt.Errorf("ingest endpoints %v, want only %s", got, addr)
	}
	if len(slices.Items) != 1 || slices.Items[0].Labels[discoveryv1.LabelManagedBy] != ingest.EndpointManagedBy {
		return errors.New("want one slice, managed by " + ingest.EndpointManagedBy)
	}
	return nil
}

// hostAddress is this host's first global unicast address (IPv4 first).
func hostAddress(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var v6 string
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || !n.IP.IsGlobalUnicast() {
			continue
		}
		if n.IP.To4() != nil {
			return n.IP.String()
		}
		if v6 == "" {
			v6 = n.IP.String()
		}
	}
	if v6 == "" {
		t.Skip("this host has no non-loopback address for the replicas to listen on (an EndpointSlice may not name a loopback address)")
	}
	return v6
}
