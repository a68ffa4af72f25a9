package podresponse

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/exposure"
)

func privilegedPod(t *testing.T, ns, name string) {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "shop"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx",
			SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}}}}}
	if err := k8s.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error {
		return evaluator.Reader.Get(context.Background(), client.ObjectKeyFromObject(pod), &corev1.Pod{})
	})
}

// criticalReport is a Trivy VulnerabilityReport for a bare pod.
func criticalReport(t *testing.T, ns, pod string) {
	t.Helper()
	r := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": "pod-" + pod, "namespace": ns, "labels": map[string]any{
			"trivy-operator.resource.kind": "Pod", "trivy-operator.resource.name": pod}},
		"report": map[string]any{"summary": map[string]any{"criticalCount": int64(2), "highCount": int64(0)}},
	}}
	r.SetGroupVersionKind(exposure.VulnerabilityReportGVK)
	if err := k8s.Create(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error {
		var l unstructured.UnstructuredList
		l.SetGroupVersionKind(exposure.VulnerabilityReportGVK.GroupVersion().WithKind("VulnerabilityReportList"))
		if err := evaluator.Reader.List(context.Background(), &l, client.InNamespace(ns)); err != nil {
			return err
		}
		if len(l.Items) == 0 {
			return fmt.Errorf("report not in the cache yet")
		}
		return nil
	})
}

func TestExposureMovesTheScoreButNeverLiftsZero(t *testing.T) {
	ns := newNamespace(t, "plain")
	privilegedPod(t, ns, "priv")
	privilegedPod(t, ns, "idle")
	newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Detectors = []securityv1alpha1.DetectorWeight{{Name: "my-model", Weight: 1}}
		s.Scoring.Exposure = securityv1alpha1.Exposure{Misconfiguration: true, Vulnerabilities: true}
	})
	target := func(pod string) *securityv1alpha1.Quarantine {
		for _, q := range quarantines(t, ns) {
			if q.Spec.Target.Name == pod {
				return &q
			}
		}
		return nil
	}

	// Privileged: 0.76 + 0.05 reaches 0.8.
	postScore(t, ns, "priv", "my-model", 0.76)
	eventually(t, func() error {
		q := target("priv")
		if q == nil {
			return fmt.Errorf("priv not contained")
		}
		if q.Spec.Reason.Score != "0.81" || !strings.Contains(q.Spec.Reason.Summary, "misconfiguration +0.05") {
			return fmt.Errorf("reason %+v", q.Spec.Reason)
		}
		return nil
	})

	// Baseline but not restricted: no push, 0.76 stays below.
	postScore(t, ns, "plain", "my-model", 0.76)
	// Exposure alone never triggers: a zero stays zero on a privileged,
	// vulnerable pod.
	criticalReport(t, ns, "idle")
	postScore(t, ns, "idle", "my-model", 0)
	time.Sleep(1500 * time.Millisecond) // give the controllers time to act wrongly
	if target("plain") != nil || target("idle") != nil {
		t.Fatalf("contained without reaching the threshold: %+v", quarantines(t, ns))
	}

	// Critical vulnerabilities reported for the plain pod push it over.
	criticalReport(t, ns, "plain")
	postScore(t, ns, "plain", "my-model", 0.76)
	eventually(t, func() error {
		q := target("plain")
		if q == nil {
			return fmt.Errorf("plain not contained")
		}
		if !strings.Contains(q.Spec.Reason.Summary, "vulnerabilities +0.05") {
			return fmt.Errorf("reason %+v", q.Spec.Reason)
		}
		return nil
	})
}

// The cache trims pods (internal/podcache); exposure read from the cache
// must equal exposure read live, for pods as the API server stores them.
func TestExposureFromTrimmedCacheEqualsLive(t *testing.T) {
	ns := newNamespace(t)
	restricted := func() corev1.PodSpec {
		return corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Volumes:         []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}}},
			Containers: []corev1.Container{{Name: "c", Image: "nginx", Env: []corev1.EnvVar{{Name: "A", Value: "b"}},
				Ports: []corev1.ContainerPort{{ContainerPort: 80}},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}},
		}
	}
	c0 := func(s *corev1.PodSpec) *corev1.Container { return &s.Containers[0] }
	specs := map[string]func(s *corev1.PodSpec, m *metav1.ObjectMeta){
		"restricted": func(*corev1.PodSpec, *metav1.ObjectMeta) {},
		"baseline":   func(s *corev1.PodSpec, _ *metav1.ObjectMeta) { c0(s).SecurityContext = nil },
		"privileged": func(s *corev1.PodSpec, _ *metav1.ObjectMeta) {
			c0(s).SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
		},
		"hostpath": func(s *corev1.PodSpec, _ *metav1.ObjectMeta) {
			s.Volumes = append(s.Volumes, corev1.Volume{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
		},
		"capabilities": func(s *corev1.PodSpec, _ *metav1.ObjectMeta) {
			c0(s).SecurityContext.Capabilities.Add = []corev1.Capability{"SYS_ADMIN"}
		},
		"seccomp": func(s *corev1.PodSpec, _ *metav1.ObjectMeta) {
			s.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		},
		"hostport": func(s *corev1.PodSpec, _ *metav1.ObjectMeta) { c0(s).Ports[0].HostPort = 8080 },
		"probehost": func(s *corev1.PodSpec, _ *metav1.ObjectMeta) {
			c0(s).ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Host: "10.0.0.1", Port: intstr.FromInt32(80)}}}
		},
		"hostnetwork": func(s *corev1.PodSpec, _ *metav1.ObjectMeta) { s.HostNetwork = true },
		"apparmor": func(_ *corev1.PodSpec, m *metav1.ObjectMeta) {
			m.Annotations = map[string]string{"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}
		},
	}
	for name, f := range specs {
		spec, meta := restricted(), metav1.ObjectMeta{Namespace: ns, Name: name}
		f(&spec, &meta)
		if err := k8s.Create(context.Background(), &corev1.Pod{ObjectMeta: meta, Spec: spec}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	deltas := map[float64]bool{}
	for name := range specs {
		key := client.ObjectKey{Namespace: ns, Name: name}
		live, cached := &corev1.Pod{}, &corev1.Pod{}
		if err := k8s.Get(context.Background(), key, live); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() error { return evaluator.Reader.Get(context.Background(), key, cached) })
		if len(cached.Spec.Containers[0].Env) != 0 {
			t.Fatalf("%s: the cache does not trim pods", name)
		}
		want, got := evaluator.Exposure.Misconfiguration(live), evaluator.Exposure.Misconfiguration(cached)
		if want != got {
			t.Errorf("%s: exposure live %+v, from the cache %+v", name, want, got)
		}
		deltas[want.Delta] = true
	}
	if len(deltas) != 3 {
		t.Errorf("fixtures cover deltas %v; want all three outcomes", deltas)
	}
}
