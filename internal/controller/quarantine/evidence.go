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

// snapshotEvidence captures the pod and encodes the evidence, trimmed to
// the API's bounds, in memory. A failure is recorded as it happens.
func (p *pass) snapshotEvidence() {
	doc := evidence.Capture(p.now, &p.scope.Target.Pods[0], p.scope.Target.OwnerChain(), p.q.Spec.Reason)
	// Only a pass of this Quarantine that died between the label and the
	// evidence puts this label here: the pod as it was did not carry it.
	if doc.Labels[securityv1alpha1.QuarantineLabel] == p.q.Name {
		delete(doc.Labels, securityv1alpha1.QuarantineLabel)
	}
	raw, sum, err := doc.Encode()
	var ev *securityv1alpha1.Evidence
	if err == nil {
		ev, err = evidence.Status(doc, raw, sum, evidence.SecretName(p.q.Name))
	}
	if err != nil {
		p.evidenceFailed(doc, err)
		return
	}
	p.evidence = &snapshot{raw: raw, sum: sum, ev: ev, doc: doc}
}

// persistSnapshot puts the snapshot into status, spilling it into its
// Secret when large. A Secret that cannot be written leaves a minimal
// record: containment always goes on.
func (p *pass) persistSnapshot(ctx context.Context) {
	s := p.evidence
	p.evidence = nil
	if s.ev.SecretRef != "" {
		if err := evidence.Spill(ctx, p.r.Client, p.q, s.raw, s.sum); err != nil {
			p.evidenceFailed(s.doc, fmt.Errorf("evidence Secret %s: %w", s.ev.SecretRef, err))
			return
		}
	}
	p.q.Status.Evidence = s.ev
	msg := fmt.Sprintf("%d bytes, sha256 %s", len(s.raw), s.sum)
	if len(s.doc.Trimmed) > 0 {
		msg += "; trimmed to fit: " + strings.Join(s.doc.Trimmed, ", ")
	}
	p.audit(containment.Actor, "EvidenceCaptured", kubeutil.Truncate(msg, kubeutil.MaxMessage))
}

// evidenceFailed audits a capture that could not be stored and keeps a
// minimal record (when it was tried), so it is not retried after actions
// changed the pod.
func (p *pass) evidenceFailed(doc evidence.Document, err error) {
	msg := kubeutil.Truncate("evidence not stored, containment goes on: "+err.Error(), kubeutil.MaxMessage)
	p.quarantineEvent(corev1.EventTypeWarning, ReasonEvidenceFailed, "Capture", msg)
	p.audit(containment.Actor, ReasonEvidenceFailed, msg)
	p.q.Status.Evidence = &securityv1alpha1.Evidence{CapturedAt: p.now, Node: doc.Node, Images: doc.Images, OwnerChain: doc.OwnerChain, Labels: doc.Labels}
}
