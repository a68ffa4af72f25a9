package podresponse

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// Issue 17: a policy's Quarantine is created with the Quarantine
// controller's finalizer (no Quarantine controller runs in this suite), so
// that controller's first pass writes the intent at once instead of a
// finalizer patch first.
func TestQuarantineCreatedWithFinalizer(t *testing.T) {
	ns := newNamespace(t, "shop-1")
	newPolicy(t, ns, securityv1alpha1.ModeEnforce)
	postFalco(t, ns, "shop-1", "Critical")
	onlyQuarantine(t, ns, func(q *securityv1alpha1.Quarantine) error {
		if !controllerutil.ContainsFinalizer(q, securityv1alpha1.QuarantineFinalizer) {
			return fmt.Errorf("finalizers %v, want %s from the create", q.Finalizers, securityv1alpha1.QuarantineFinalizer)
		}
		return nil
	})
}

// handoffs hears every create of the suite's decider; it runs each
// create's Event at once, as no Quarantine controller runs here.
var handoffs = &recordingHandoff{}

type recordingHandoff struct {
	mu    sync.Mutex
	calls []string
}

func (h *recordingHandoff) add(s string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, s)
}

func (h *recordingHandoff) Creating(key types.NamespacedName)  { h.add("creating " + key.String()) }
func (h *recordingHandoff) Abandoned(key types.NamespacedName) { h.add("abandoned " + key.String()) }
func (h *recordingHandoff) Created(q *securityv1alpha1.Quarantine, after func()) {
	h.add(fmt.Sprintf("created %s/%s uid=%t", q.Namespace, q.Name, q.UID != ""))
	if after != nil {
		after()
	}
}

func (h *recordingHandoff) of(key string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, c := range h.calls {
		if strings.Fields(c)[1] == key {
			out = append(out, c)
		}
	}
	return out
}

// Issue 17: the decider hands each Quarantine it creates to containment
// as the API server returned it (with its UID), announced before the
// request, so its isolation does not wait for the watch.
func TestCreatesAreHandedOver(t *testing.T) {
	ns := newNamespace(t, "shop-1")
	newPolicy(t, ns, securityv1alpha1.ModeEnforce)
	postFalco(t, ns, "shop-1", "Critical")
	q := onlyQuarantine(t, ns, func(*securityv1alpha1.Quarantine) error { return nil })
	key := ns + "/" + q.Name
	want := []string{"creating " + key, "created " + key + " uid=true"}
	// The create's answer reaches the decider after the object is visible.
	eventually(t, func() error {
		if got := handoffs.of(key); !slices.Equal(got, want) {
			return fmt.Errorf("hand-off calls for %s: %q, want %q", key, got, want)
		}
		return nil
	})
}
