package podresponse

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/time/rate"

	"github.com/bulkhead-dev/bulkhead/internal/metrics"
)

// A flood of plans over an exhausted budget writes a bounded number of
// Events (client-go writes each in its own goroutine and request); the rest
// are counted. Without the bound every plan wrote one.
func TestPlanEventsAreBounded(t *testing.T) {
	r := &Reconciler{PlanEvents: rate.NewLimiter(0, 2)}
	before := testutil.ToFloat64(metrics.EventsSuppressed.WithLabelValues("WouldQuarantine"))
	allowed := 0
	for range 5 {
		if r.planEvent("WouldQuarantine") {
			allowed++
		}
	}
	if allowed != 2 {
		t.Fatalf("%d of 5 plan Events written, want the burst of 2", allowed)
	}
	if got := testutil.ToFloat64(metrics.EventsSuppressed.WithLabelValues("WouldQuarantine")) - before; got != 3 {
		t.Fatalf("%v suppressed Events counted, want 3", got)
	}
	if def := DefaultPlanEvents(); def.Burst() < 1 || def.Limit() <= 0 {
		t.Fatalf("default plan Event limiter %v/%d lets nothing through", def.Limit(), def.Burst())
	}
}
