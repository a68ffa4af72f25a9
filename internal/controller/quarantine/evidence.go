package quarantine

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
	"github.com/bulkhead-dev/bulkhead/internal/evidence"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// ReasonEvidenceFailed is the audit event of a capture that could not be
// stored.
const ReasonEvidenceFailed = "EvidenceFailed"

// snapshot is captured evidence waiting to be persisted: the pod as it
// was and the detectors' scores, taken before any write, and the Events
// and logs being read meanwhile.
type snapshot struct {
	doc    evidence.Document
	gather *evidence.Context
	// pod is whose Events and logs gather reads; nil once started.
	pod *corev1.Pod
	// ownersLater: captured from the cached pod before its owners were
	// read; the pass that resolves the target fills them in.
	ownersLater bool
}

// snapshotEvidence captures the pod and the detectors' scores in memory
// and starts reading its Events and logs, which run alongside isolation.
// In a burst (other Quarantines await their first pass) a snapshot kept
// from an earlier pass is used, and the reads wait until it is persisted:
// they would compete with the other targets' isolating writes.
func (p *pass) snapshotEvidence(ctx context.Context) {
	p.takeDeferredEvidence()
	if s := p.evidence; s != nil {
		if s.ownersLater {
			s.setOwners(p.scope.Target.OwnerChain())
		}
		return
	}
	pod := &p.scope.Target.Pods[0]
	doc := evidence.Capture(p.now, pod, p.scope.Target.OwnerChain(), p.q.Spec.Reason)
	// Only a pass of this Quarantine that died between the label and the
	// evidence puts this label here: the pod as it was did not carry it.
	if doc.Labels[securityv1alpha1.QuarantineLabel] == p.q.Name {
		delete(doc.Labels, securityv1alpha1.QuarantineLabel)
	}
	p.r.Evidence.AddScores(ctx, &doc, p.q.Namespace, p.q.Spec.Reason)
	p.evidence = &snapshot{doc: doc}
	if p.othersAwaitIsolation() {
		p.evidence.pod = pod.DeepCopy()
		return
	}
	p.evidence.gather = p.r.Evidence.Gather(ctx, pod)
}

// deferredSnapshotOfGonePod takes a burst's snapshot of a pod gone since:
// its owners, unresolvable now, are those the pod named.
func (p *pass) deferredSnapshotOfGonePod() {
	p.takeDeferredEvidence()
	if p.evidence != nil {
		p.evidence.ownersFromPod()
	}
}

// takeDeferredEvidence moves the snapshot an earlier pass of a burst left
// into this pass, unless this pass has one.
func (p *pass) takeDeferredEvidence() {
	if d := p.deferred; d != nil && d.evidence != nil && p.evidence == nil {
		p.evidence, d.evidence = d.evidence, nil
	}
}

// setOwners fills in the owners of a snapshot taken before they were
// resolved.
func (s *snapshot) setOwners(chain []string) {
	s.doc.SetOwnerChain(chain)
	s.ownersLater = false
}

// ownersFromPod fills them in when they no longer can be resolved: those
// the pod named.
func (s *snapshot) ownersFromPod() {
	if !s.ownersLater {
		return
	}
	var chain []string
	if s.pod != nil {
		for _, o := range s.pod.OwnerReferences {
			chain = append(chain, o.Kind+"/"+o.Name)
		}
	}
	s.setOwners(chain)
}

// snapshotCached captures the cached pod in memory ahead of a burst's
// isolating writes: the rest of the pass (and the live read of the pod)
// comes in a later pass, up to holdFor later, when the pod may have
// changed. Its owners are filled in once resolved; Events and logs are
// read when the snapshot is persisted.
func (p *pass) snapshotCached(ctx context.Context, pod *corev1.Pod) {
	if p.q.Status.Evidence != nil || p.evidence != nil || (p.deferred != nil && p.deferred.evidence != nil) {
		return
	}
	doc := evidence.Capture(p.now, pod, nil, p.q.Spec.Reason)
	p.r.Evidence.AddScores(ctx, &doc, p.q.Namespace, p.q.Spec.Reason)
	p.evidence = &snapshot{doc: doc, pod: pod.DeepCopy(), ownersLater: true}
}

// deferEvidence keeps the snapshot for a later pass of this Quarantine
// while others await isolation; it reports whether it did.
func (p *pass) deferEvidence() bool {
	if p.evidence == nil || p.r.stash == nil || !p.othersAwaitIsolation() {
		return false
	}
	d := p.deferred
	if d == nil {
		d = &deferred{}
	}
	d.evidence, p.evidence = p.evidence, nil
	p.r.stash.put(p.q.UID, d)
	return true
}

// persistSnapshot joins the Events and logs (bounded by their timeout),
// writes the whole document to its Secret in the manager namespace, where
// it outlives the Quarantine, and puts the status view in place. A Secret
// that cannot be written leaves the status view alone: containment always
// goes on.
func (p *pass) persistSnapshot(ctx context.Context) {
	s := p.evidence
	p.evidence = nil
	doc := s.doc
	if s.pod != nil {
		s.gather = p.r.Evidence.Gather(ctx, s.pod)
	}
	s.gather.Wait(ctx, &doc)
	doc.Quarantine = p.q.Name
	raw, sum, err := doc.Encode()
	var ev *securityv1alpha1.Evidence
	if err == nil {
		ev, err = evidence.Status(doc, raw, sum, evidence.SecretName(p.q))
	}
	if err != nil {
		p.evidenceFailed(doc, err)
		return
	}
	if err := evidence.Spill(ctx, p.r.Client, p.r.ManagerNamespace, p.q, raw, sum); err != nil {
		p.evidenceFailed(doc, fmt.Errorf("evidence Secret %s/%s: %w", p.r.ManagerNamespace, ev.SecretRef, err))
		ev.SecretRef = ""
		p.q.Status.Evidence = ev
		return
	}
	p.q.Status.Evidence = ev
	msg := fmt.Sprintf("%d bytes, sha256 %s, kept in Secret %s/%s", len(raw), sum, p.r.ManagerNamespace, ev.SecretRef)
	if len(doc.Trimmed) > 0 {
		msg += "; trimmed to fit: " + strings.Join(doc.Trimmed, ", ")
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

// deferred is what a pass in a burst left for a later pass of the same
// Quarantine: the evidence snapshot taken before its isolating writes (from
// the cached pod, snapshotCached), and when it made them if it did not
// record that in status. A manager that
// dies meanwhile loses it: the next pass isolates again (idempotent),
// snapshots again and drops the quarantine label it finds
// (snapshotEvidence), and release undoes unrecorded isolation.
type deferred struct {
	evidence   *snapshot
	isolatedAt *metav1.Time
	// target is what was isolated, for a pass that finds it gone.
	target *securityv1alpha1.ResolvedTarget
	// stashed is when it was put in the stash.
	stashed time.Time
}

// stashTTL bounds how long a deferred record waits for its pass: a burst
// holds passes for seconds, so an older one belongs to a Quarantine
// deleted without its release pass (its finalizer removed by hand).
const stashTTL = 10 * time.Minute

// evidenceStash holds the deferred records by Quarantine uid.
type evidenceStash struct {
	mu sync.Mutex
	m  map[types.UID]*deferred
}

func (s *evidenceStash) put(uid types.UID, d *deferred) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[types.UID]*deferred{}
	}
	now := time.Now()
	for k, old := range s.m {
		if now.Sub(old.stashed) > stashTTL {
			delete(s.m, k)
		}
	}
	d.stashed = now
	s.m[uid] = d
}

func (s *evidenceStash) take(uid types.UID) *deferred {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.m[uid]
	delete(s.m, uid)
	return d
}

// has reports whether a record waits for uid; with isolated, only one
// whose isolation status does not record yet.
func (s *evidenceStash) has(uid types.UID, isolated bool) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.m[uid]
	return ok && (!isolated || d.isolatedAt != nil)
}
