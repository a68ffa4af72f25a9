// Package sensordeploy installs and upgrades the node sensor's DaemonSet from
// the manager, so kustomize, Helm and OLM (whose bundles cannot carry a
// DaemonSet) share one install path. The switch is a ConfigMap in the manager
// namespace; the DaemonSet is rendered by a pure function and applied with
// server-side apply.
package sensordeploy

import (
	"fmt"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// Names other objects, RBAC and docs rely on.
const (
	// Name is the DaemonSet's and its ServiceAccount's name; ConfigName the
	// ConfigMap that switches the sensor on.
	Name       = "bulkhead-sensor"
	ConfigName = "bulkhead-sensor"
	// FieldManager owns the DaemonSet's fields.
	FieldManager = "bulkhead-sensor-installer"
	// Audience is what ingestion's TokenReview requires of a sensor's token.
	Audience = "bulkhead-ingest"
	// TokenPath is where the projected, audience-bound token is mounted.
	TokenPath = "/var/run/secrets/bulkhead/token"
	// IngestCAConfigMap publishes the CA that signs ingestion's serving
	// certificate; the sensor verifies the manager with it.
	IngestCAConfigMap = "bulkhead-ingest-ca"
	// ComponentLabel / ComponentValue select the sensor's pods.
	ComponentLabel = "app.kubernetes.io/component"
	ComponentValue = "sensor"

	hostCgroupRoot = "/host/sys/fs/cgroup"
	pinDir         = "/sys/fs/bpf/bulkhead"
	caDir          = "/var/run/bulkhead/ingest-ca"
	probePort      = 8085
	metricsPort    = 8086
)

// Config is what the switch ConfigMap and the manager's flags decide.
type Config struct {
	// Namespace is the manager namespace; the sensor runs there.
	Namespace string
	// Image is the manager's own image (one image for both roles).
	Image string
	// IngestURL is the manager's ingestion endpoint as sensors reach it.
	IngestURL string
	// CgroupRoot is the host's cgroup v2 mount (hybrid hosts: .../unified).
	CgroupRoot string
	// LearningWindow overrides the sensor's default when non-zero.
	LearningWindow time.Duration
}

// ParseConfig reads the switch ConfigMap's data. enabled reports whether the
// sensor should run; bad values are errors that say what to fix.
func ParseConfig(data map[string]string, base Config) (cfg Config, enabled bool, err error) {
	cfg = base
	if v, ok := data["enabled"]; ok {
		if enabled, err = strconv.ParseBool(v); err != nil {
			return cfg, false, fmt.Errorf("%s: enabled=%q: want true or false", ConfigName, v)
		}
	}
	if v := data["image"]; v != "" {
		cfg.Image = v
	}
	if v := data["cgroupRoot"]; v != "" {
		if v[0] != '/' {
			return cfg, false, fmt.Errorf("%s: cgroupRoot=%q: want an absolute host path", ConfigName, v)
		}
		cfg.CgroupRoot = v
	}
	if v := data["learningWindow"]; v != "" {
		d, perr := time.ParseDuration(v)
		if perr != nil || d <= 0 {
			return cfg, false, fmt.Errorf("%s: learningWindow=%q: want a positive duration such as 24h", ConfigName, v)
		}
		cfg.LearningWindow = d
	}
	if cfg.CgroupRoot == "" {
		cfg.CgroupRoot = "/sys/fs/cgroup"
	}
	if cfg.IngestURL == "" {
		cfg.IngestURL = fmt.Sprintf("https://bulkhead-ingest.%s.svc:8444", cfg.Namespace)
	}
	return cfg, enabled, nil
}

// Labels are on the DaemonSet and its pods.
func Labels() map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":        "bulkhead",
		ComponentLabel:                  ComponentValue,
		securityv1alpha1.ManagedByLabel: securityv1alpha1.ManagedByValue,
	}
}

// DaemonSet renders the sensor: one pod per node, with the least privilege
// that loads and attaches BPF programs (CAP_BPF, CAP_PERFMON for tracing,
// CAP_NET_ADMIN for cgroup socket programs and socket destruction,
// CAP_SYS_RESOURCE for map memory on older kernels) instead of privileged,
// and read-only host mounts except the BPF pin directory, which keeps
// isolations in force across sensor restarts. Cutting an isolated pod's live
// connections, and learning the connections a pod held before the sensor
// saw it, run a socket iterator inside the pod's network namespace: that
// takes the host PID namespace (to find the pod's processes from its
// cgroup) and CAP_SYS_ADMIN (setns). Without them isolation still drops
// every packet, but established connections stall instead of being reset.
// No host network or IPC.
func DaemonSet(cfg Config) *appsv1.DaemonSet {
	selector := map[string]string{"app.kubernetes.io/name": "bulkhead", ComponentLabel: ComponentValue}
	args := []string{
		"sensor",
		"--node-name=$(NODE_NAME)",
		"--cgroup-root=" + hostCgroupRoot,
		"--ingest-url=" + cfg.IngestURL,
		"--token-file=" + TokenPath,
		"--ca-file=" + caDir + "/ca.crt",
		"--manager-namespace=" + cfg.Namespace,
		"--bpf-pin-dir=" + pinDir,
		fmt.Sprintf("--health-probe-bind-address=:%d", probePort),
		fmt.Sprintf("--metrics-bind-address=:%d", metricsPort),
	}
	if cfg.LearningWindow > 0 {
		args = append(args, "--learning-window="+cfg.LearningWindow.String())
	}
	hostDir := ptr.To(corev1.HostPathDirectory)
	probe := func(path string, delay int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(probePort)}},
			InitialDelaySeconds: delay, PeriodSeconds: 10,
		}
	}
	return &appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{Name: Name, Namespace: cfg.Namespace, Labels: Labels()},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
				Type:          appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromString("10%"))},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      Labels(),
					Annotations: map[string]string{"kubectl.kubernetes.io/default-container": "sensor"},
				},
				Spec: corev1.PodSpec{
					ServiceAccountName: Name,
					HostPID:            true,
					// Every node, control plane and tainted ones included:
					// a node without a sensor is a node without coverage.
					Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					TerminationGracePeriodSeconds: ptr.To[int64](10),
					Containers: []corev1.Container{{
						Name:            "sensor",
						Image:           cfg.Image,
						ImagePullPolicy: corev1.PullIfNotPresent,
						Command:         []string{"/bulkhead"},
						Args:            args,
						Env: []corev1.EnvVar{
							{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
							{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
						},
						Ports: []corev1.ContainerPort{
							{Name: "probes", ContainerPort: probePort, Protocol: corev1.ProtocolTCP},
							{Name: "metrics", ContainerPort: metricsPort, Protocol: corev1.ProtocolTCP},
						},
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("96Mi")},
							Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("384Mi")},
						},
						SecurityContext: &corev1.SecurityContext{
							// BPF needs uid 0 in the initial user namespace plus
							// the capabilities below; everything else is dropped.
							RunAsUser:                ptr.To[int64](0),
							RunAsNonRoot:             ptr.To(false),
							Privileged:               ptr.To(false),
							AllowPrivilegeEscalation: ptr.To(false),
							ReadOnlyRootFilesystem:   ptr.To(true),
							Capabilities: &corev1.Capabilities{
								Drop: []corev1.Capability{"ALL"},
								Add:  []corev1.Capability{"BPF", "PERFMON", "NET_ADMIN", "SYS_RESOURCE", "SYS_ADMIN"},
							},
							SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
						},
						ReadinessProbe: probe("/readyz", 5),
						LivenessProbe:  probe("/healthz", 15),
						VolumeMounts: []corev1.VolumeMount{
							{Name: "cgroup", MountPath: hostCgroupRoot, ReadOnly: true},
							{Name: "bpffs", MountPath: pinDir},
							{Name: "ingest-token", MountPath: "/var/run/secrets/bulkhead", ReadOnly: true},
							{Name: "ingest-ca", MountPath: caDir, ReadOnly: true},
						},
					}},
					Volumes: []corev1.Volume{
						{Name: "cgroup", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: cfg.CgroupRoot, Type: hostDir}}},
						{Name: "bpffs", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: pinDir, Type: ptr.To(corev1.HostPathDirectoryOrCreate)}}},
						{Name: "ingest-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
							Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
								Audience: Audience, ExpirationSeconds: ptr.To[int64](3600), Path: "token",
							}}},
						}}},
						{Name: "ingest-ca", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: IngestCAConfigMap},
							// The manager publishes it at start; until then the
							// sensor waits rather than skipping verification.
							Optional: ptr.To(true),
						}}},
					},
				},
			},
		},
	}
}
