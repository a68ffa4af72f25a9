package quarantine

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
	"github.com/bulkhead-dev/bulkhead/internal/evidence"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// ReasonEvidenceFailed is the audit event of a capture that could not be
// stored.
const ReasonEvidenceFailed = "EvidenceFailed"

// captureEvidence captures, trims to the API's bounds and stores the
// evidence. A failure is audited and leaves a minimal record (when it was
// tried), so it is not retried after actions changed the pod: containment
// always goes on.
func (p *pass) captureEvidence(ctx context.Context) {
	doc := evidence.Capture(p.now, &p.scope.Target.Pods[0], p.scope.Target.OwnerChain(), p.q.Spec.Reason)
	ev, err := p.storeEvidence(ctx, &doc)
	if err != nil {
		msg := kubeutil.Truncate("evidence not stored, containment goes on: "+err.Error(), kubeutil.MaxMessage)
		p.quarantineEvent(corev1.EventTypeWarning, ReasonEvidenceFailed, "Capture", msg)
		p.audit(containment.Actor, ReasonEvidenceFailed, msg)
		p.q.Status.Evidence = &securityv1alpha1.Evidence{CapturedAt: p.now, Node: doc.Node, Images: doc.Images, OwnerChain: doc.OwnerChain, Labels: doc.Labels}
		return
	}
	p.q.Status.Evidence = ev
	msg := fmt.Sprintf("%d bytes, sha256 %s", ev.SizeBytes, ev.SHA256)
	if len(doc.Trimmed) > 0 {
		msg += "; trimmed to fit: " + strings.Join(doc.Trimmed, ", ")
	}
	p.audit(containment.Actor, "EvidenceCaptured", kubeutil.Truncate(msg, kubeutil.MaxMessage))
}

func (p *pass) storeEvidence(ctx context.Context, doc *evidence.Document) (*securityv1alpha1.Evidence, error) {
	raw, sum, err := doc.Encode()
	if err != nil {
		return nil, err
	}
	ev, err := evidence.Status(*doc, raw, sum, evidence.SecretName(p.q.Name))
	if err != nil {
		return nil, err
	}
	if ev.SecretRef != "" {
		if err := evidence.Spill(ctx, p.r.Client, p.q, raw, sum); err != nil {
			return nil, fmt.Errorf("evidence Secret %s: %w", ev.SecretRef, err)
		}
	}
	return ev, nil
}
