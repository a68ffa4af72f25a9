package sensordeploy

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

func TestParseConfig(t *testing.T) {
	base := Config{Namespace: "bulkhead-system", Image: "img:1"}
	for _, tc := range []struct {
		name    string
		data    map[string]string
		enabled bool
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		{name: "absent means off", data: nil},
		{name: "on with defaults", data: map[string]string{"enabled": "true"}, enabled: true, check: func(t *testing.T, c Config) {
			if c.CgroupRoot != "/sys/fs/cgroup" || c.Image != "img:1" || c.IngestURL != "https://bulkhead-ingest.bulkhead-system.svc:8444" {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{name: "overrides", data: map[string]string{"enabled": "true", "image": "img:2", "cgroupRoot": "/sys/fs/cgroup/unified", "learningWindow": "2h"}, enabled: true,
			check: func(t *testing.T, c Config) {
				if c.Image != "img:2" || c.CgroupRoot != "/sys/fs/cgroup/unified" || c.LearningWindow != 2*time.Hour {
					t.Errorf("overrides: %+v", c)
				}
			}},
		{name: "bad bool", data: map[string]string{"enabled": "yes please"}, wantErr: "want true or false"},
		{name: "relative root", data: map[string]string{"enabled": "true", "cgroupRoot": "sys"}, wantErr: "absolute"},
		{name: "bad window", data: map[string]string{"enabled": "true", "learningWindow": "-1h"}, wantErr: "positive duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, on, err := ParseConfig(tc.data, base)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || on != tc.enabled {
				t.Fatalf("enabled=%v err=%v, want %v", on, err, tc.enabled)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

// The sensor must not be privileged, share the host's network or IPC, or
// mount more of the host than it reads; its token must be audience-bound. It
// shares the host PID namespace and holds CAP_SYS_ADMIN only because cutting
// live connections enters pods' network namespaces (see DaemonSet).
func TestDaemonSetLeastPrivilege(t *testing.T) {
	ds := DaemonSet(Config{Namespace: "bulkhead-system", Image: "img:1", CgroupRoot: "/sys/fs/cgroup", IngestURL: "https://x:8444"})
	spec := ds.Spec.Template.Spec
	if spec.HostNetwork || spec.HostIPC {
		t.Fatal("sensor shares the host's network or IPC namespace")
	}
	if !spec.HostPID {
		t.Fatal("without the host PID namespace the sensor cannot find a pod's processes, so it cannot cut its live connections")
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Fatal("sensor is privileged or may escalate")
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Fatalf("drop = %v", sc.Capabilities.Drop)
	}
	want := []corev1.Capability{"BPF", "PERFMON", "NET_ADMIN", "SYS_RESOURCE", "SYS_ADMIN"}
	if !slices.Equal(sc.Capabilities.Add, want) {
		t.Fatalf("capabilities %v, want exactly %v", sc.Capabilities.Add, want)
	}
	for _, m := range c.VolumeMounts {
		if m.Name != "bpffs" && !m.ReadOnly {
			t.Errorf("mount %s is writable", m.Name)
		}
	}
	var audience string
	for _, v := range spec.Volumes {
		if v.Projected != nil {
			audience = v.Projected.Sources[0].ServiceAccountToken.Audience
		}
	}
	if audience != Audience {
		t.Fatalf("token audience %q", audience)
	}
	if len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists {
		t.Fatalf("tolerations %v: the sensor must run on every node", spec.Tolerations)
	}
	if !slices.Contains(c.Args, "--node-name=$(NODE_NAME)") || c.Args[0] != "sensor" {
		t.Fatalf("args %v", c.Args)
	}
	if ds.Labels[ComponentLabel] != ComponentValue || ds.Spec.Template.Labels[ComponentLabel] != ComponentValue {
		t.Fatal("component label missing")
	}
	// It needs the privileged Pod Security level (hostPath, capabilities) and
	// nothing tighter admits it: the namespace must say so (docs/install.md).
	ev, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	for _, r := range ev.EvaluatePod(api.LevelVersion{Level: api.LevelBaseline, Version: api.LatestVersion()}, &ds.Spec.Template.ObjectMeta, &spec) {
		if !r.Allowed {
			failed = append(failed, r.ForbiddenReason)
		}
	}
	if len(failed) == 0 {
		t.Fatal("expected baseline to refuse the sensor (hostPath, added capabilities); the install docs say it needs privileged")
	}
}
