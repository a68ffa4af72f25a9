package threatpolicy

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/internal/sensorhub"
)

// A node without a sensor, with a silent one or without BPF leaves policies
// that weigh behavior blind there; the condition names each.
func TestBehaviorCoverage(t *testing.T) {
	now := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	ok := sensorhub.NodeState{Node: "n1", Ready: true, LastSeen: now}
	nobpf := sensorhub.NodeState{Node: "n2", Ready: false, Missing: "BTF", LastSeen: now}
	silent := sensorhub.NodeState{Node: "n3", Ready: true, LastSeen: now.Add(-time.Hour)}
	c := BehaviorCoverage([]string{"n1"}, []sensorhub.NodeState{ok}, nil)
	if c.status != metav1.ConditionTrue || c.uncovered != 0 {
		t.Fatalf("all covered: %+v", c)
	}
	c = BehaviorCoverage([]string{"n1", "n2", "n3", "n4"}, []sensorhub.NodeState{ok, nobpf, silent}, []sensorhub.NodeState{nobpf, silent})
	if c.status != metav1.ConditionFalse || c.reason != "NodesUncovered" || c.uncovered != 3 {
		t.Fatalf("uncovered: %+v", c)
	}
	for _, want := range []string{"n2 (no BPF: BTF)", "n3 (sensor silent since", "n4 (no sensor)"} {
		if !strings.Contains(c.message, want) {
			t.Errorf("message %q lacks %q", c.message, want)
		}
	}
	if strings.Contains(c.message, "n1") {
		t.Errorf("covered node listed: %q", c.message)
	}
}
