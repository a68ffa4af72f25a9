package podcache

import (
	"fmt"
	"math/rand"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/randfill"

	"github.com/bulkhead-dev/bulkhead/internal/exposure"
)

func trim(t *testing.T, tf func(any) (any, error), pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	out, err := tf(pod.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	return out.(*corev1.Pod)
}

// pssResults is every check's result at both levels: comparing them compares
// more than the exposure adjustment (which stops at the first failing level).
func pssResults(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	ev, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	for _, level := range []psaapi.Level{psaapi.LevelBaseline, psaapi.LevelRestricted} {
		for i, r := range ev.EvaluatePod(psaapi.LevelVersion{Level: level, Version: psaapi.LatestVersion()}, &pod.ObjectMeta, &pod.Spec) {
			out += fmt.Sprintf("%s %d: %+v\n", level, i, r)
		}
	}
	return out
}

// differs reports how the trimmed pod's exposure differs from the full pod's, or "".
func differs(t *testing.T, tf func(any) (any, error), pod *corev1.Pod) string {
	t.Helper()
	a, err := exposure.NewAssessor(nil)
	if err != nil {
		t.Fatal(err)
	}
	trimmed := trim(t, tf, pod)
	if full, got := a.Misconfiguration(pod), a.Misconfiguration(trimmed); full != got {
		return fmt.Sprintf("exposure %+v, trimmed %+v", full, got)
	}
	if full, got := pssResults(t, pod), pssResults(t, trimmed); full != got {
		return fmt.Sprintf("checks\n%s\ntrimmed\n%s", full, got)
	}
	return ""
}

// A pod as the API server stores it: defaults, the service-account volume,
// status and managedFields.
func realistic() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "shop-7d9c-abcde", Namespace: "web", UID: "0b9f", ResourceVersion: "42", GenerateName: "shop-7d9c-",
			Labels:      map[string]string{"app": "shop", "pod-template-hash": "7d9c"},
			Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "shop-7d9c", UID: "rs-1",
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate}},
		},
		Spec: corev1.PodSpec{
			NodeName: "node-1", ServiceAccountName: "default", RestartPolicy: corev1.RestartPolicyAlways,
			Tolerations: []corev1.Toleration{{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists}},
			Volumes: []corev1.Volume{{Name: "kube-api-access-x", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}}},
			Containers: []corev1.Container{{
				Name: "app", Image: "shop:1", Args: []string{"--listen=:8080"},
				Env:          []corev1.EnvVar{{Name: "PASSWORD", Value: "hunter2"}},
				VolumeMounts: []corev1.VolumeMount{{Name: "kube-api-access-x", MountPath: "/var/run/secrets"}},
				Ports:        []corev1.ContainerPort{{ContainerPort: 8080}},
				LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					Path: "/healthz", Port: intstr.FromInt32(8080)}}},
			}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1",
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true, ImageID: "sha256:abc"}}},
	}
}

func TestTransformKeepsWhatReadersUse(t *testing.T) {
	in := realistic()
	got := trim(t, Transform(), in)
	want := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "shop-7d9c-abcde", Namespace: "web", UID: "0b9f", ResourceVersion: "42",
			Labels:          in.Labels,
			OwnerReferences: in.OwnerReferences,
		},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app", Image: "shop:1"}}},
		// Nothing reads the phase today; it is kept so a reader never sees a
		// running pod as phase "".
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("trimmed\n%+v\nwant\n%+v", got, want)
	}
}

func TestTransformSharesRepeatedValues(t *testing.T) {
	tf := Transform()
	a, b := realistic(), realistic()
	b.Name, b.UID = "shop-7d9c-fghij", "1c2d"
	ta, tb := trim(t, tf, a), trim(t, tf, b)
	if reflect.ValueOf(ta.Labels).UnsafePointer() != reflect.ValueOf(tb.Labels).UnsafePointer() {
		t.Error("labels not shared")
	}
	if &ta.OwnerReferences[0] != &tb.OwnerReferences[0] {
		t.Error("owner references not shared")
	}
	if &ta.Spec.Containers[0] != &tb.Spec.Containers[0] {
		t.Error("containers not shared")
	}
	// A different value is not shared.
	b.Labels["pod-template-hash"] = "other"
	b.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
	tb = trim(t, tf, b)
	if tb.Labels["pod-template-hash"] != "other" || tb.Spec.Containers[0].SecurityContext == nil {
		t.Fatalf("a different pod got shared values: %+v", tb)
	}
	if ta.Labels["pod-template-hash"] != "7d9c" || ta.Spec.Containers[0].SecurityContext != nil {
		t.Fatalf("the first pod changed: %+v", ta)
	}
}

// fixtures cover every Pod Security Standards check, failing and passing.
func fixtures() map[string]*corev1.Pod {
	restricted := func() *corev1.Pod {
		p := realistic()
		p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
		return p
	}
	with := func(f func(p *corev1.Pod)) *corev1.Pod {
		p := restricted()
		f(p)
		return p
	}
	c := func(p *corev1.Pod) *corev1.Container { return &p.Spec.Containers[0] }
	return map[string]*corev1.Pod{
		"default":    realistic(),
		"restricted": restricted(),
		"privileged": with(func(p *corev1.Pod) { c(p).SecurityContext.Privileged = ptr.To(true) }),
		"hostPath": with(func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
		}),
		"nfs": with(func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "share", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs", Path: "/"}}})
		}),
		"capabilities": with(func(p *corev1.Pod) {
			c(p).SecurityContext.Capabilities.Add = []corev1.Capability{"SYS_ADMIN", "NET_RAW"}
		}),
		"capabilitiesNoDrop": with(func(p *corev1.Pod) {
			c(p).SecurityContext.Capabilities = &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE"}}
		}),
		"seccompUnconfined": with(func(p *corev1.Pod) {
			p.Spec.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		}),
		"seccompContainerLocalhost": with(func(p *corev1.Pod) {
			c(p).SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: ptr.To("p.json")}
		}),
		"seccompAnnotation": with(func(p *corev1.Pod) {
			p.Annotations = map[string]string{"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}
		}),
		"apparmorAnnotation": with(func(p *corev1.Pod) {
			p.Annotations = map[string]string{"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}
		}),
		"apparmorField": with(func(p *corev1.Pod) {
			p.Spec.SecurityContext.AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
		}),
		"hostNamespaces": with(func(p *corev1.Pod) { p.Spec.HostNetwork, p.Spec.HostPID, p.Spec.HostIPC = true, true, true }),
		"hostPort": with(func(p *corev1.Pod) {
			c(p).Ports = append(c(p).Ports, corev1.ContainerPort{ContainerPort: 53, HostPort: 53})
		}),
		"probeHost": with(func(p *corev1.Pod) { c(p).LivenessProbe.HTTPGet.Host = "169.254.169.254" }),
		"lifecycleHost": with(func(p *corev1.Pod) {
			c(p).Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{TCPSocket: &corev1.TCPSocketAction{Host: "10.0.0.1", Port: intstr.FromInt32(1)}}}
		}),
		"runAsRoot": with(func(p *corev1.Pod) {
			p.Spec.SecurityContext.RunAsNonRoot = nil
			c(p).SecurityContext.RunAsUser = ptr.To[int64](0)
		}),
		"userNamespace": with(func(p *corev1.Pod) {
			p.Spec.HostUsers = ptr.To(false)
			p.Spec.SecurityContext.RunAsNonRoot = nil
			c(p).SecurityContext.RunAsUser = ptr.To[int64](0)
		}),
		"procMount": with(func(p *corev1.Pod) { c(p).SecurityContext.ProcMount = ptr.To(corev1.UnmaskedProcMount) }),
		"seLinux": with(func(p *corev1.Pod) {
			c(p).SecurityContext.SELinuxOptions = &corev1.SELinuxOptions{Type: "spc_t", User: "root"}
		}),
		"sysctls": with(func(p *corev1.Pod) {
			p.Spec.SecurityContext.Sysctls = []corev1.Sysctl{{Name: "kernel.shm_rmid_forced", Value: "0"}, {Name: "net.core.somaxconn", Value: "1"}}
		}),
		"windowsHostProcess": with(func(p *corev1.Pod) {
			p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
			c(p).SecurityContext.WindowsOptions = &corev1.WindowsSecurityContextOptions{HostProcess: ptr.To(true)}
		}),
		"windows": with(func(p *corev1.Pod) {
			// Restricted skips its Linux-only checks for Windows pods.
			p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
			p.Spec.SecurityContext.SeccompProfile = nil
			c(p).SecurityContext = nil
		}),
		"initAndEphemeral": with(func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "init", SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}}}
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
				Name: "debug", SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_PTRACE"}}}}}}
		}),
	}
}

func TestTransformKeepsExposure(t *testing.T) {
	tf := Transform()
	for name, pod := range fixtures() {
		t.Run(name, func(t *testing.T) {
			if d := differs(t, tf, pod); d != "" {
				t.Fatal(d)
			}
		})
	}
}

// Random pods fill every field, so a check a newer pod-security-admission
// adds on a field the transform drops fails here.
func TestTransformKeepsExposureOfRandomPods(t *testing.T) {
	tf := Transform()
	for seed := range uint64(500) {
		pod := randomPod(seed)
		if d := differs(t, tf, pod); d != "" {
			t.Fatalf("seed %d: %s", seed, d)
		}
	}
}

func randomPod(seed uint64) *corev1.Pod {
	r := rand.New(rand.NewSource(int64(seed))) //nolint:gosec // reproducible test data
	f := randfill.New().RandSource(r).NilChance(0.3).NumElements(0, 3).MaxDepth(12)
	pod := &corev1.Pod{}
	f.Fill(pod)
	// Random values never hit the annotations or OS name the standards read.
	if pod.Spec.OS != nil && r.Intn(2) == 0 {
		pod.Spec.OS.Name = corev1.Windows
	}
	if r.Intn(2) == 0 {
		pod.Annotations = map[string]string{"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}
		for _, c := range pod.Spec.Containers {
			pod.Annotations["container.apparmor.security.beta.kubernetes.io/"+c.Name] = "unconfined"
		}
	}
	return pod
}

// The comparison above must be able to fail: transforms that lose a field a
// check reads are caught by the fixtures and by the random pods.
func TestExposureComparisonCatchesLostFields(t *testing.T) {
	losers := map[string]func(p *corev1.Pod){
		"container security context": func(p *corev1.Pod) {
			for i := range p.Spec.Containers {
				p.Spec.Containers[i].SecurityContext = nil
			}
		},
		"volumes":          func(p *corev1.Pod) { p.Spec.Volumes = nil },
		"annotations":      func(p *corev1.Pod) { p.Annotations = nil },
		"host namespaces":  func(p *corev1.Pod) { p.Spec.HostNetwork, p.Spec.HostPID, p.Spec.HostIPC = false, false, false },
		"probes":           func(p *corev1.Pod) { p.Spec.Containers[0].LivenessProbe = nil },
		"host users":       func(p *corev1.Pod) { p.Spec.HostUsers = nil },
		"pod os":           func(p *corev1.Pod) { p.Spec.OS = nil },
		"init containers":  func(p *corev1.Pod) { p.Spec.InitContainers = nil },
		"pod security ctx": func(p *corev1.Pod) { p.Spec.SecurityContext = nil },
	}
	for name, lose := range losers {
		t.Run(name, func(t *testing.T) {
			base := Transform()
			lossy := func(obj any) (any, error) {
				out, err := base(obj)
				p := out.(*corev1.Pod).DeepCopy() // shared values stay intact
				if len(p.Spec.Containers) > 0 {
					lose(p)
				}
				return p, err
			}
			caught := false
			for _, pod := range fixtures() {
				if differs(t, lossy, pod) != "" {
					caught = true
				}
			}
			randomCaught := false
			for seed := range uint64(500) {
				if pod := randomPod(seed); len(pod.Spec.Containers) > 0 && differs(t, lossy, pod) != "" {
					randomCaught = true
					break
				}
			}
			if !caught || !randomCaught {
				t.Fatalf("losing %s went unnoticed (fixtures %v, random pods %v)", name, caught, randomCaught)
			}
		})
	}
}

func TestTransformStripsOtherObjects(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}},
		Data: map[string]string{"k": "v"}}
	out, err := Transform()(cm)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.ConfigMap)
	if got.ManagedFields != nil || got.Name != "c" || got.Data["k"] != "v" {
		t.Fatalf("got %+v", got)
	}
}

// The manager is created before the API server answers: the cache options
// must not ask it anything (a ByObject entry does).
func TestCacheOptionsNeedNoAPIServer(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1", Timeout: time.Second} // nothing listens on port 1
	if _, err := cache.New(cfg, CacheOptions()); err != nil {
		t.Fatal(err)
	}
}
