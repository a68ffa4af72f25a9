// Package notify tells people about Quarantine phase changes: a Slack
// incoming webhook, a generic HMAC-signed JSON webhook and a CloudEvents HTTP
// sink, configured from a Secret in the manager namespace. Delivery is
// asynchronous, bounded and retried, so it never slows containment.
package notify

import (
	"time"

	"k8s.io/apimachinery/pkg/runtime"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// EventType is the CloudEvents type and the webhook payload's "type" of a
// Quarantine phase change.
const EventType = "dev.bulkhead.quarantine.phase-changed.v1"

// The types of notices: things people must hear about that are not a phase
// change. Each comes from the Kubernetes Event of the same reason.
const (
	// BudgetExhaustedType: a ThreatPolicy has spent its maxActiveQuarantines
	// and new containments are only planned.
	BudgetExhaustedType = "dev.bulkhead.policy.budget-exhausted.v1"
	// AutoReleaseExtendedType: a Quarantine was due for auto-release, but
	// the score has not fallen, so it stays.
	AutoReleaseExtendedType = "dev.bulkhead.quarantine.auto-release-extended.v1"
)

// noticeTypes maps the reason of a Kubernetes Event to the notice it sends.
var noticeTypes = map[string]string{
	securityv1alpha1.ReasonBudgetExhausted: BudgetExhaustedType,
	"AutoReleaseExtended":                  AutoReleaseExtendedType,
}

// Event is one phase change, as sent to every sink. It is a copy taken when
// the change happens, so later edits to the Quarantine do not leak into it.
type Event struct {
	// ID is the same for every sink and retry, so receivers can deduplicate.
	ID         string                             `json:"id"`
	Type       string                             `json:"type"`
	Time       time.Time                          `json:"time"`
	Namespace  string                             `json:"namespace"`
	Quarantine string                             `json:"quarantine"`
	UID        string                             `json:"uid,omitempty"`
	Target     securityv1alpha1.Target            `json:"target"`
	From       securityv1alpha1.QuarantinePhase   `json:"from,omitempty"`
	To         securityv1alpha1.QuarantinePhase   `json:"to"`
	Approved   bool                               `json:"approved"`
	Released   bool                               `json:"released"`
	Reason     *securityv1alpha1.QuarantineReason `json:"reason,omitempty"`
	Actions    []ActionSummary                    `json:"actions,omitempty"`
	Node       string                             `json:"node,omitempty"`
	Owner      string                             `json:"owner,omitempty"`
	// Policy and Message are set on notices (Type other than EventType).
	Policy  string `json:"policy,omitempty"`
	Message string `json:"message,omitempty"`
}

// ActionSummary is one action's state, without the undo record.
type ActionSummary struct {
	Type     securityv1alpha1.ActionType  `json:"type"`
	State    securityv1alpha1.ActionState `json:"state"`
	Resource string                       `json:"resource,omitempty"`
	Message  string                       `json:"message,omitempty"`
}

func newEvent(id string, now time.Time, q *securityv1alpha1.Quarantine, from, to securityv1alpha1.QuarantinePhase) Event {
	ev := Event{
		ID:         id,
		Type:       EventType,
		Time:       now.UTC(),
		Namespace:  q.Namespace,
		Quarantine: q.Name,
		UID:        string(q.UID),
		Target:     q.Spec.Target,
		From:       from,
		To:         to,
		Approved:   q.IsApproved(),
		Released:   q.IsReleased(),
	}
	if q.Spec.Reason != nil {
		ev.Reason = q.Spec.Reason.DeepCopy()
	}
	if t := q.Status.Target; t != nil {
		ev.Node, ev.Owner = t.Node, t.Owner
	}
	for _, a := range q.Status.Actions {
		ev.Actions = append(ev.Actions, ActionSummary{Type: a.Type, State: a.State, Resource: a.Resource, Message: a.Message})
	}
	return ev
}

// newNotice is a notice about a ThreatPolicy or a Quarantine.
func newNotice(id string, now time.Time, typ string, regarding runtime.Object, message string) (Event, bool) {
	var ev Event
	switch o := regarding.(type) {
	case *securityv1alpha1.Quarantine:
		ev = newEvent(id, now, o, o.Status.Phase, o.Status.Phase)
		ev.From = ""
	case *securityv1alpha1.ThreatPolicy:
		ev = Event{ID: id, Time: now.UTC(), Policy: o.Name}
	default:
		return Event{}, false
	}
	ev.Type, ev.Message = typ, message
	return ev, true
}
