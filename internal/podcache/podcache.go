// Package podcache trims the Pods the manager caches to what its readers use,
// so memory per watched pod stays small.
//
// Readers of cached pods (mgr.GetClient()) and what they read:
//   - policy selection, coverage, the quarantine label watch, behavior
//     workload keys: name, namespace, labels, owner references;
//   - the engine and ingestion: existence, UID;
//   - exposure (Pod Security Standards): the fields its checks read, listed
//     in trimSpec and trimContainer and guarded by this package's tests.
//
// Everything else is dropped: status (but the phase), managedFields, most
// annotations, volumes every standard allows (the service-account token
// volume among them), tolerations, affinity, env, resources, mounts. Code that
// needs the full pod (containment, evidence) reads it live with the API reader.
//
// Values that repeat across pods (namespace, node, the labels and owner of
// one ReplicaSet's pods, their container list) are shared, not copied: the
// cached client deep-copies on read, and event handlers only read.
package podcache

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
)

// Annotation prefixes the Pod Security Standards read (AppArmor and the
// legacy seccomp annotations); other annotations are dropped, notably
// kubectl's last-applied-configuration.
var keptAnnotationPrefixes = []string{
	"container.apparmor.security.beta.kubernetes.io/",
	"seccomp.security.alpha.kubernetes.io/pod",
	"container.seccomp.security.alpha.kubernetes.io/",
}

// maxShared bounds each table of shared values; a full table starts over
// (values already cached stay valid, they are just no longer shared).
const maxShared = 16384

// CacheOptions are the manager's cache options: Pods trimmed, managedFields
// stripped from everything else. One default transform rather than ByObject:
// a ByObject entry makes the manager ask the API server at creation whether
// Pods are namespaced, and the manager must start while it is unreachable.
func CacheOptions() cache.Options {
	return cache.Options{DefaultTransform: Transform()}
}

// Transform returns a cache transform that trims Pods and strips
// managedFields from other objects. Each call has its own tables of shared
// values.
func Transform() toolscache.TransformFunc {
	t := newTrimmer()
	strip := cache.TransformStripManagedFields()
	return func(obj any) (any, error) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return strip(obj)
		}
		return t.trim(pod), nil
	}
}

type trimmer struct {
	mu         sync.Mutex
	strs       map[string]string
	labels     map[string]map[string]string
	owners     map[string][]metav1.OwnerReference
	containers map[string][]corev1.Container
}

func newTrimmer() *trimmer {
	return &trimmer{strs: map[string]string{}, labels: map[string]map[string]string{},
		owners: map[string][]metav1.OwnerReference{}, containers: map[string][]corev1.Container{}}
}

func (t *trimmer) trim(in *corev1.Pod) *corev1.Pod {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := &corev1.Pod{
		TypeMeta: in.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:                       in.Name,
			Namespace:                  t.str(in.Namespace),
			UID:                        in.UID,
			ResourceVersion:            in.ResourceVersion,
			Generation:                 in.Generation,
			CreationTimestamp:          in.CreationTimestamp,
			DeletionTimestamp:          in.DeletionTimestamp,
			DeletionGracePeriodSeconds: in.DeletionGracePeriodSeconds,
			Labels:                     t.labelSet(in.Labels),
			Annotations:                keptAnnotations(in.Annotations),
			OwnerReferences:            t.ownerRefs(in.OwnerReferences),
			Finalizers:                 in.Finalizers,
		},
		Spec:   t.trimSpec(&in.Spec),
		Status: corev1.PodStatus{Phase: corev1.PodPhase(t.str(string(in.Status.Phase)))},
	}
	return out
}

// trimSpec keeps what the Pod Security Standards read, and the node.
func (t *trimmer) trimSpec(in *corev1.PodSpec) corev1.PodSpec {
	out := corev1.PodSpec{
		NodeName:        t.str(in.NodeName),
		HostNetwork:     in.HostNetwork,
		HostPID:         in.HostPID,
		HostIPC:         in.HostIPC,
		HostUsers:       in.HostUsers,
		SecurityContext: in.SecurityContext,
		OS:              in.OS,
	}
	for _, v := range in.Volumes {
		if !allowedEverywhere(&v) {
			out.Volumes = append(out.Volumes, v)
		}
	}
	out.InitContainers = t.containerList(in.InitContainers)
	out.Containers = t.containerList(in.Containers)
	for _, c := range in.EphemeralContainers {
		out.EphemeralContainers = append(out.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon(trimContainer((*corev1.Container)(&c.EphemeralContainerCommon))),
			TargetContainerName:      c.TargetContainerName,
		})
	}
	return out
}

// allowedEverywhere: volume types the restricted standard allows (and so
// baseline too) say nothing to any check; the service-account token volume
// is one of them and the largest part of most pod specs.
func allowedEverywhere(v *corev1.Volume) bool {
	switch {
	case v.HostPath != nil: // baseline looks at it whatever else is set
	case v.ConfigMap != nil, v.CSI != nil, v.DownwardAPI != nil, v.EmptyDir != nil, v.Ephemeral != nil,
		v.Image != nil, v.PersistentVolumeClaim != nil, v.Projected != nil, v.Secret != nil:
		return true
	}
	return false
}

// trimContainer keeps the name, image, security context, host ports and
// probe or lifecycle handlers that name a host.
func trimContainer(in *corev1.Container) corev1.Container {
	out := corev1.Container{Name: in.Name, Image: in.Image, SecurityContext: in.SecurityContext}
	for _, p := range in.Ports {
		if p.HostPort != 0 {
			out.Ports = append(out.Ports, p)
		}
	}
	out.LivenessProbe = hostProbe(in.LivenessProbe)
	out.ReadinessProbe = hostProbe(in.ReadinessProbe)
	out.StartupProbe = hostProbe(in.StartupProbe)
	if l := in.Lifecycle; l != nil {
		post, pre := hostHandler(l.PostStart), hostHandler(l.PreStop)
		if post != nil || pre != nil {
			out.Lifecycle = &corev1.Lifecycle{PostStart: post, PreStop: pre}
		}
	}
	return out
}

func hostProbe(p *corev1.Probe) *corev1.Probe {
	if p == nil {
		return nil
	}
	h := hostHandler(&corev1.LifecycleHandler{HTTPGet: p.HTTPGet, TCPSocket: p.TCPSocket})
	if h == nil {
		return nil
	}
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: h.HTTPGet, TCPSocket: h.TCPSocket}}
}

func hostHandler(h *corev1.LifecycleHandler) *corev1.LifecycleHandler {
	if h == nil {
		return nil
	}
	var out corev1.LifecycleHandler
	if h.HTTPGet != nil && h.HTTPGet.Host != "" {
		out.HTTPGet = h.HTTPGet
	}
	if h.TCPSocket != nil && h.TCPSocket.Host != "" {
		out.TCPSocket = h.TCPSocket
	}
	if out.HTTPGet == nil && out.TCPSocket == nil {
		return nil
	}
	return &out
}

func keptAnnotations(in map[string]string) map[string]string {
	var out map[string]string
	for k, v := range in {
		for _, p := range keptAnnotationPrefixes {
			if strings.HasPrefix(k, p) {
				if out == nil {
					out = map[string]string{}
				}
				out[k] = v
				break
			}
		}
	}
	return out
}

func (t *trimmer) str(s string) string {
	if s == "" {
		return ""
	}
	return share(t.strs, s, s)
}

// share returns the value table holds under key, or stores v there; a full
// table starts over (maxShared).
func share[T any](table map[string]T, key string, v T) T {
	if have, ok := table[key]; ok {
		return have
	}
	if len(table) >= maxShared {
		clear(table)
	}
	table[key] = v
	return v
}

func (t *trimmer) labelSet(in map[string]string) map[string]string {
	if len(in) == 0 {
		return nil
	}
	keys := slices.Sorted(maps.Keys(in))
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(in[k])
		b.WriteByte(0)
	}
	return share(t.labels, b.String(), in)
}

func (t *trimmer) ownerRefs(in []metav1.OwnerReference) []metav1.OwnerReference {
	if len(in) == 0 {
		return nil
	}
	key, err := json.Marshal(in)
	if err != nil {
		return in
	}
	return share(t.owners, string(key), slices.Clip(in))
}

func (t *trimmer) containerList(in []corev1.Container) []corev1.Container {
	if len(in) == 0 {
		return nil
	}
	out := make([]corev1.Container, len(in))
	for i := range in {
		out[i] = trimContainer(&in[i])
	}
	key, err := json.Marshal(out)
	if err != nil {
		return out
	}
	return share(t.containers, string(key), out)
}
