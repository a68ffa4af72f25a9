package containment

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// The audit keeps the first AuditHead and the last AuditTail entries: how it
// started and what happened lately, bounded whatever the churn.
const (
	AuditHead = 10
	AuditTail = 40
)

// Actor is how the controller names itself in the audit.
const Actor = "bulkhead/containment"

// AppendAudit adds an entry, dropping the oldest entry after the head when
// the timeline is full.
func AppendAudit(st *securityv1alpha1.QuarantineStatus, t metav1.Time, actor, event, message string) {
	st.Audit = append(st.Audit, securityv1alpha1.AuditEntry{Time: t, Actor: actor, Event: event, Message: kubeutil.Truncate(message, kubeutil.MaxMessage)})
	if over := len(st.Audit) - (AuditHead + AuditTail); over > 0 {
		st.Audit = append(st.Audit[:AuditHead], st.Audit[AuditHead+over:]...)
		st.AuditDropped += int32(over)
	}
}
