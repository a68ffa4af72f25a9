// Package evidence records a contained pod as it was: a redacted document,
// its digest, the view kept in Quarantine status and, when too large for
// status, an owned Secret holding all of it.
package evidence

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
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
	d := Document{CapturedAt: now, Pod: pod.Name, PodSpec: RedactPodSpec(&pod.Spec), Node: pod.Spec.NodeName, Labels: maps.Clone(pod.Labels), Reason: reason}
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
	if len(d.OwnerChain) > maxOwnerChain {
		d.OwnerChain = d.OwnerChain[:maxOwnerChain]
	}
	for i := range d.OwnerChain {
		d.OwnerChain[i] = kubeutil.Truncate(d.OwnerChain[i], maxOwnerLen)
	}
	d.Node = kubeutil.Truncate(d.Node, maxNameLen)
}

// Encode serialises the document and returns its digest. A document over
// MaxDocumentLen is made to fit the evidence Secret: long args and commands
// are cut first, then the pod spec is dropped; Trimmed says which.
func (d *Document) Encode() ([]byte, string, error) {
	raw, sum, err := d.encode()
	if err != nil || len(raw) <= MaxDocumentLen {
		return raw, sum, err
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

// Status is the status view of a document: all of it when it fits, else
// everything but the pod spec plus secretRef.
func Status(d Document, raw []byte, sum, secretName string) (*securityv1alpha1.Evidence, error) {
	ev := &securityv1alpha1.Evidence{
		CapturedAt: d.CapturedAt, Images: d.Images, Node: d.Node, OwnerChain: d.OwnerChain,
		Labels: d.Labels, SHA256: sum, SizeBytes: int64(len(raw)),
	}
	if d.Reason != nil && d.Reason.Detector != "" {
		ev.Scores = []securityv1alpha1.ScoreComponent{{Source: d.Reason.Detector, Score: d.Reason.Score, Reason: kubeutil.Truncate(d.Reason.Summary, kubeutil.MaxMessage)}}
	}
	if len(raw) > MaxInStatus {
		ev.SecretRef = secretName
		return ev, nil
	}
	spec, err := json.Marshal(d.PodSpec)
	if err != nil {
		return nil, err
	}
	ev.PodSpec = &runtime.RawExtension{Raw: spec}
	return ev, nil
}

// SecretName is the Secret holding evidence too large for status.
func SecretName(quarantine string) string { return "bulkhead-evidence-" + quarantine }

// Spill writes the full document to the Quarantine's owned Secret.
func Spill(ctx context.Context, c client.Writer, q *securityv1alpha1.Quarantine, raw []byte, sum string) error {
	sec := &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name: SecretName(q.Name), Namespace: q.Namespace, Labels: containment.ManagedLabels(q.Name),
			Annotations:     map[string]string{"security.bulkhead.dev/sha256": sum},
			OwnerReferences: []metav1.OwnerReference{containment.OwnerRef(q)},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"evidence.json": raw},
	}
	return kubeutil.ApplyObject(ctx, c, sec)
}
