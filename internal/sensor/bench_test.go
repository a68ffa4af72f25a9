package sensor

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
)

// BenchmarkHeartbeat measures one heartbeat request over TLS (keep-alive),
// client side, and reports the payload size: the steady-state cost per node.
func BenchmarkHeartbeat(b *testing.B) {
	m := newFakeManager(b)
	enf := []wire.Enforcement{{Namespace: "web", Pod: "shop-abc", Quarantine: "shop-abc", Enforced: true,
		Programs: []string{"cgroup_skb/ingress", "cgroup_skb/egress", "cgroup/connect4", "cgroup/sendmsg4"}, ConnCut: true, SocketsDestroyed: 1, Method: "bpf_sock_destroy"}}
	s, _ := testSender(b, m, SenderConfig{}, func() (wire.Coverage, []wire.Enforcement) { return wire.Coverage{Ready: true}, nil })
	ctx := context.Background()
	for b.Loop() {
		if err := s.SendOnce(ctx); err != nil {
			b.Fatal(err)
		}
	}
	idle, _ := json.Marshal(wire.Report{Node: "ip-10-0-12-34.eu-west-1.compute.internal", Heartbeat: true, Coverage: wire.Coverage{Ready: true}, Scores: []wire.Score{}, Enforcement: []wire.Enforcement{}})
	withEnf, _ := json.Marshal(wire.Report{Node: "ip-10-0-12-34.eu-west-1.compute.internal", Heartbeat: true, Coverage: wire.Coverage{Ready: true}, Scores: []wire.Score{}, Enforcement: enf})
	b.ReportMetric(float64(len(idle)), "idle-payload-bytes")
	b.ReportMetric(float64(len(withEnf)), "payload-with-1-enforcement-bytes")
}
