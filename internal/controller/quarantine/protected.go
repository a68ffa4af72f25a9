package quarantine

import (
	"context"
	"fmt"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// refuseProtected fails a hand-made Quarantine in a namespace a
// ThreatPolicy protects (ProtectedBy); the manager's own are decided by
// their policies, which respect their own lists.
func (p *pass) refuseProtected(ctx context.Context) (bool, error) {
	if p.r.ProtectedBy == nil {
		return false, nil
	}
	if p.r.Provenance != nil {
		signer, err := p.r.Provenance.Signer(ctx)
		if err != nil {
			return false, err
		}
		if signer.Made(p.q) {
			return false, nil
		}
	}
	by, err := p.r.ProtectedBy(ctx, p.q.Namespace)
	if err != nil || by == "" {
		return false, err
	}
	p.fail(securityv1alpha1.ReasonProtectedNamespace, fmt.Sprintf(
		"namespace %s is listed in ThreatPolicy %s's safeguards.protectedNamespaces: Bulkhead contains nothing there, by hand either (remove it from that list first)",
		p.q.Namespace, by))
	return true, nil
}
