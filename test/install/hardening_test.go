package install

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func fromInstall[T any](t *testing.T, kind string) *T {
	t.Helper()
	for _, u := range readObjects(t, repoPath("dist", "install.yaml")) {
		if u.GetKind() == kind {
			out := new(T)
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
				t.Fatal(err)
			}
			return out
		}
	}
	t.Fatalf("dist/install.yaml has no %s", kind)
	return nil
}

// managerPod is the pod the manager Deployment would create.
func managerPod(t *testing.T) *corev1.Pod {
	d := fromInstall[appsv1.Deployment](t, "Deployment")
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "bulkhead-manager-", Namespace: d.Namespace, Labels: d.Spec.Template.Labels},
		Spec:       d.Spec.Template.Spec,
	}
}

// TestManagerPodIsRestricted: the API server's Pod Security admission accepts
// the manager's pod in its namespace, which enforces the restricted profile,
// and the container is hardened beyond it.
func TestManagerPodIsRestricted(t *testing.T) {
	installOnce(t)
	pod := managerPod(t)
	if err := env.Client.Create(ctx(t), pod.DeepCopy(), client.DryRunAll); err != nil {
		t.Fatalf("the manager's pod is refused in %s: %v", pod.Namespace, err)
	}
	c := pod.Spec.Containers[0]
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("no container securityContext")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("root filesystem is writable")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("privilege escalation allowed")
	case sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0:
		t.Errorf("capabilities %+v, want drop ALL and add none", sc.Capabilities)
	case pod.Spec.SecurityContext.SeccompProfile == nil || pod.Spec.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("seccomp profile is not RuntimeDefault")
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("no %s request", r)
		}
		if _, ok := c.Resources.Limits[r]; !ok {
			t.Errorf("no %s limit", r)
		}
	}
}

// TestUnhardenedPodIsRefused proves the check above can fail: without its
// security context the same pod is refused by Pod Security admission.
func TestUnhardenedPodIsRefused(t *testing.T) {
	installOnce(t)
	pod := managerPod(t)
	pod.Spec.SecurityContext = nil
	pod.Spec.Containers[0].SecurityContext = nil
	if err := env.Client.Create(ctx(t), pod, client.DryRunAll); err == nil {
		t.Fatal("a pod without a security context was admitted in the manager namespace")
	}
}

// TestManagerNetworkPolicy: the manager admits only metrics and ingestion and
// reaches only DNS and HTTPS.
func TestManagerNetworkPolicy(t *testing.T) {
	np := fromInstall[networkingv1.NetworkPolicy](t, "NetworkPolicy")
	d := fromInstall[appsv1.Deployment](t, "Deployment")
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Fatalf("NetworkPolicy selector %v does not select the manager pod", sel)
	}
	if len(np.Spec.PolicyTypes) != 2 {
		t.Errorf("policyTypes %v, want Ingress and Egress", np.Spec.PolicyTypes)
	}
	ports := func(rules [][]networkingv1.NetworkPolicyPort) map[int32]bool {
		out := map[int32]bool{}
		for _, ps := range rules {
			if len(ps) == 0 {
				t.Error("a rule allows every port")
			}
			for _, p := range ps {
				out[p.Port.IntVal] = true
			}
		}
		return out
	}
	in := make([][]networkingv1.NetworkPolicyPort, 0, len(np.Spec.Ingress))
	out := make([][]networkingv1.NetworkPolicyPort, 0, len(np.Spec.Egress))
	for _, r := range np.Spec.Ingress {
		in = append(in, r.Ports)
	}
	for _, r := range np.Spec.Egress {
		out = append(out, r.Ports)
	}
	if got := ports(in); len(got) != 2 || !got[8443] || !got[8444] {
		t.Errorf("ingress ports %v, want exactly 8443 (metrics) and 8444 (ingestion)", got)
	}
	if got := ports(out); !got[53] || !got[443] || !got[6443] || len(got) != 3 {
		t.Errorf("egress ports %v, want exactly 53, 443 and 6443", got)
	}
}
