// Package evidence records a contained pod as it was: a redacted document,
// its digest, the view kept in Quarantine status and, when too large for
// status, an owned Secret holding all of it.
package evidence

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"regexp"
	"strings"

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

// secretArg matches arguments that carry a secret: --password=x, --token x,
// api_key=x and the like.
var secretArg = regexp.MustCompile(`(?i)(pass(word|wd)?|secret|token|api[-_]?key|credential|auth)`)

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
}

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
	return d
}

// RedactPodSpec returns a copy with env values and secret-like arguments
// replaced. References (secretKeyRef, configMapKeyRef) are kept: they name a
// source, not the secret itself.
func RedactPodSpec(in *corev1.PodSpec) *corev1.PodSpec {
	spec := in.DeepCopy()
	redact := func(cs []corev1.Container) {
		for i := range cs {
			for j := range cs[i].Env {
				if cs[i].Env[j].Value != "" {
					cs[i].Env[j].Value = Redacted
				}
			}
			cs[i].Args = RedactArgs(cs[i].Args)
			cs[i].Command = RedactArgs(cs[i].Command)
		}
	}
	redact(spec.InitContainers)
	redact(spec.Containers)
	for i := range spec.EphemeralContainers {
		c := &spec.EphemeralContainers[i].EphemeralContainerCommon
		for j := range c.Env {
			if c.Env[j].Value != "" {
				c.Env[j].Value = Redacted
			}
		}
		c.Args, c.Command = RedactArgs(c.Args), RedactArgs(c.Command)
	}
	return spec
}

// RedactArgs hides the value of secret-like flags, both --flag=value and
// "--flag value".
func RedactArgs(args []string) []string {
	if args == nil {
		return nil
	}
	out := make([]string, len(args))
	next := false
	for i, a := range args {
		switch {
		case next:
			out[i], next = Redacted, false
		case strings.Contains(a, "="):
			k, _, _ := strings.Cut(a, "=")
			if secretArg.MatchString(k) {
				out[i] = k + "=" + Redacted
			} else {
				out[i] = a
			}
		case strings.HasPrefix(a, "-") && secretArg.MatchString(a):
			out[i], next = a, true
		default:
			out[i] = a
		}
	}
	return out
}

// Encode serialises the document and returns its digest.
func (d Document) Encode() ([]byte, string, error) {
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
