// Package evidence records a contained pod as it was: a redacted document
// (pod spec, container statuses, recent Events, log tails, every detector's
// score and evidence, the fused breakdown), its digest, the view kept in
// Quarantine status, and a Secret in the manager namespace holding all of
// it, kept for a retention period after the Quarantine is gone.
package evidence

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// MaxInStatus bounds the evidence kept in status; beyond it the document
// spills to an owned Secret and status keeps its sha256.
const MaxInStatus = 16 << 10

// Redacted replaces every secret value in evidence.
const Redacted = "REDACTED"

// Document is the full evidence; status holds it or its digest.
type Document struct {
	CapturedAt metav1.Time                        `json:"capturedAt"`
	Pod        string                             `json:"pod"`
	PodSpec    *corev1.PodSpec                    `json:"podSpec,omitempty"`
	Images     []securityv1alpha1.ContainerImage  `json:"images,omitempty"`
	Node       string                             `json:"node,omitempty"`
	OwnerChain []string                           `json:"ownerChain,omitempty"`
	Labels     map[string]string                  `json:"labels,omitempty"`
	Reason     *securityv1alpha1.QuarantineReason `json:"reason,omitempty"`
	// Namespace and Quarantine say whose evidence this is: it outlives
	// the Quarantine.
	Namespace  string `json:"namespace,omitempty"`
	Quarantine string `json:"quarantine,omitempty"`
	// Containers are the container statuses with restart counts.
	Containers []ContainerState `json:"containers,omitempty"`
	// Events are the pod's recent Events, oldest first.
	Events []PodEvent `json:"events,omitempty"`
	// Logs are the last lines of each container's log.
	Logs []ContainerLog `json:"logs,omitempty"`
	// Detectors are every fresh detector score with its evidence; Fused
	// each contributing policy's weighted breakdown.
	Detectors []DetectorScore `json:"detectors,omitempty"`
	Fused     []FusedScore    `json:"fused,omitempty"`
	// Notes say what could not be gathered, and why.
	Notes []string `json:"notes,omitempty"`
	// Trimmed lists what was cut to fit the API's limits.
	Trimmed []string `json:"trimmed,omitempty"`
}

// The API's bounds on evidence: a pod built to exceed them must still be
// contained, so the evidence is trimmed, never refused.
const (
	maxLabels      = 128
	maxImages      = 64
	maxImageLen    = 1024
	maxNameLen     = 253
	maxOwnerChain  = 8
	maxOwnerLen    = 320
	maxArgLen      = 1024
	maxArgs        = 64
	MaxDocumentLen = 1<<20 - 64<<10 // a Secret holds 1 MiB, metadata included
)

// Capture builds the redacted evidence document of a pod; ownerChain is the
// controller owner chain from the pod up, as Kind/name.
func Capture(now metav1.Time, pod *corev1.Pod, ownerChain []string, reason *securityv1alpha1.QuarantineReason) Document {
	d := Document{CapturedAt: now, Pod: pod.Name, Namespace: pod.Namespace, PodSpec: RedactPodSpec(&pod.Spec), Node: pod.Spec.NodeName,
		Labels: maps.Clone(pod.Labels), Reason: reason, Containers: containerStates(pod)}
	ids := map[string]string{}
	for _, cs := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		ids[cs.Name] = cs.ImageID
	}
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		d.Images = append(d.Images, securityv1alpha1.ContainerImage{Container: c.Name, Image: c.Image, ImageID: ids[c.Name]})
	}
	d.OwnerChain = ownerChain
	d.fit()
	return d
}

// fit trims the parts status holds to the API's bounds.
func (d *Document) fit() {
	if len(d.Labels) > maxLabels {
		keys := slices.Sorted(maps.Keys(d.Labels))
		kept := make(map[string]string, maxLabels)
		for _, k := range keys[:maxLabels] {
			kept[k] = d.Labels[k]
		}
		d.Labels = kept
		d.Trimmed = append(d.Trimmed, fmt.Sprintf("labels: %d of %d kept", maxLabels, len(keys)))
	}
	if len(d.Images) > maxImages {
		d.Trimmed = append(d.Trimmed, fmt.Sprintf("images: %d of %d kept", maxImages, len(d.Images)))
		d.Images = d.Images[:maxImages]
	}
	cut := false
	for i := range d.Images {
		im := &d.Images[i]
		for _, f := range []struct {
			s *string
			n int
		}{{&im.Container, maxNameLen}, {&im.Image, maxImageLen}, {&im.ImageID, maxImageLen}} {
			if len(*f.s) > f.n {
				*f.s, cut = kubeutil.Truncate(*f.s, f.n), true
			}
		}
	}
	if cut {
		d.Trimmed = append(d.Trimmed, "image strings cut to 1024 bytes")
	}
	d.fitOwnerChain()
	d.Node = kubeutil.Truncate(d.Node, maxNameLen)
}

func (d *Document) fitOwnerChain() {
	if len(d.OwnerChain) > maxOwnerChain {
		d.OwnerChain = d.OwnerChain[:maxOwnerChain]
	}
	for i := range d.OwnerChain {
		d.OwnerChain[i] = kubeutil.Truncate(d.OwnerChain[i], maxOwnerLen)
	}
}

// SetOwnerChain records the pod's owners for a capture made before they
// were read (from the cached pod, ahead of the isolating writes).
func (d *Document) SetOwnerChain(chain []string) {
	d.OwnerChain = chain
	d.fitOwnerChain()
}

// Encode serialises the document and returns its digest. A document over
// MaxDocumentLen is made to fit the evidence Secret: logs are dropped
// first, then long args and commands are cut, then the pod spec is
// dropped; Trimmed says which (Events and detector evidence are bounded).
func (d *Document) Encode() ([]byte, string, error) {
	raw, sum, err := d.encode()
	if err != nil || len(raw) <= MaxDocumentLen {
		return raw, sum, err
	}
	if len(d.Logs) > 0 {
		d.Logs = nil
		d.Trimmed = append(d.Trimmed, "logs dropped")
		if raw, sum, err = d.encode(); err != nil || len(raw) <= MaxDocumentLen {
			return raw, sum, err
		}
	}
	if d.PodSpec != nil {
		d.PodSpec = d.PodSpec.DeepCopy()
		cutArgs(d.PodSpec)
		d.Trimmed = append(d.Trimmed, fmt.Sprintf("args and commands cut to %d entries of %d bytes", maxArgs, maxArgLen))
		if raw, sum, err = d.encode(); err != nil || len(raw) <= MaxDocumentLen {
			return raw, sum, err
		}
		d.PodSpec = nil
		d.Trimmed = append(d.Trimmed, "podSpec dropped")
	}
	return d.encode()
}

func cutArgs(spec *corev1.PodSpec) {
	cut := func(l []string) []string {
		if len(l) > maxArgs {
			l = l[:maxArgs]
		}
		for i := range l {
			l[i] = kubeutil.Truncate(l[i], maxArgLen)
		}
		return l
	}
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			cs[i].Args, cs[i].Command = cut(cs[i].Args), cut(cs[i].Command)
		}
	}
	for i := range spec.EphemeralContainers {
		c := &spec.EphemeralContainers[i].EphemeralContainerCommon
		c.Args, c.Command = cut(c.Args), cut(c.Command)
	}
}

func (d *Document) encode() ([]byte, string, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:]), nil
}

// maxStatusScores is the API's bound on status.evidence.scores.
const maxStatusScores = 20

// Status is the status view of a document: the pod spec when the view
// stays within MaxInStatus,
// the scores, and secretRef naming the Secret in the manager namespace
// that holds the whole document (and outlives the Quarantine).
func Status(d Document, raw []byte, sum, secretName string) (*securityv1alpha1.Evidence, error) {
	ev := &securityv1alpha1.Evidence{
		CapturedAt: d.CapturedAt, Images: d.Images, Node: d.Node, OwnerChain: d.OwnerChain,
		Labels: d.Labels, SHA256: sum, SizeBytes: int64(len(raw)), SecretRef: secretName,
		Scores: statusScores(&d),
	}
	if d.PodSpec == nil {
		return ev, nil
	}
	spec, err := json.Marshal(d.PodSpec)
	if err != nil {
		return nil, err
	}
	rest, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	// The status view stays within MaxInStatus, as when the whole document
	// had to fit: the rest is in the Secret.
	if len(rest)+len(spec) <= MaxInStatus {
		ev.PodSpec = &runtime.RawExtension{Raw: spec}
	}
	return ev, nil
}

// statusScores is the first policy's fused breakdown (it has the weights),
// else every detector's score, else the reason's top detector.
func statusScores(d *Document) []securityv1alpha1.ScoreComponent {
	var out []securityv1alpha1.ScoreComponent
	switch {
	case len(d.Fused) > 0 && len(d.Fused[0].Breakdown) > 0:
		out = append(out, d.Fused[0].Breakdown...)
	case len(d.Detectors) > 0:
		for _, ds := range d.Detectors {
			out = append(out, securityv1alpha1.ScoreComponent{Source: ds.Detector, Score: ds.Score, Reason: ds.Reason})
		}
	case d.Reason != nil && d.Reason.Detector != "":
		out = append(out, securityv1alpha1.ScoreComponent{Source: d.Reason.Detector, Score: d.Reason.Score, Reason: d.Reason.Summary})
	}
	if len(out) > maxStatusScores {
		out = out[:maxStatusScores]
	}
	for i := range out {
		out[i].Reason = kubeutil.Truncate(out[i].Reason, kubeutil.MaxMessage)
	}
	return out
}
