package quarantine

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
)

// ReasonActionForbidden: the API server refused an action's write with
// Forbidden (a tenant's quota, a webhook, missing RBAC). It is retried with
// the queue's backoff: a refusal a tenant can cause must not end containment.
const ReasonActionForbidden = "ActionForbidden"

// alertForbidden raises the alert for a Forbidden action write: a metric,
// an Event and Ready=False; the pass then fails and is retried.
func (p *pass) alertForbidden(t securityv1alpha1.ActionType, err error) {
	if !apierrors.IsForbidden(err) {
		return
	}
	metrics.ActionForbidden.WithLabelValues(string(t)).Inc()
	msg := kubeutil.Truncate(fmt.Sprintf("%s refused with Forbidden, retrying: %v", t, err), kubeutil.MaxMessage)
	p.quarantineEvent(corev1.EventTypeWarning, ReasonActionForbidden, string(t), msg)
	p.setNotReady(ReasonActionForbidden, msg)
}
