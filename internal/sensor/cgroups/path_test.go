package cgroups

import (
	"strings"
	"testing"
)

const (
	uid    = "6f1c2a4e-3b5d-4e7f-8a9b-0c1d2e3f4a5b"
	uidU   = "6f1c2a4e_3b5d_4e7f_8a9b_0c1d2e3f4a5b"
	static = "0123456789abcdef0123456789abcdef"
	cid    = "4c2f8a61b0e9d3c7a5f1e2d4b6c8a0e9f1d3b5c7a9e1f3d5b7c9a1e3f5d7b9c1"
)

func TestParse(t *testing.T) {
	ok := []struct {
		name, path string
		want       Container
	}{
		{"systemd containerd burstable",
			"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
			Container{PodUID: uid, ContainerID: cid, Runtime: Containerd, QoS: Burstable}},
		{"systemd containerd guaranteed",
			"kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
			Container{PodUID: uid, ContainerID: cid, Runtime: Containerd, QoS: Guaranteed}},
		{"systemd containerd besteffort, leading slash",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
			Container{PodUID: uid, ContainerID: cid, Runtime: Containerd, QoS: BestEffort}},
		{"systemd crio",
			"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/crio-" + cid + ".scope",
			Container{PodUID: uid, ContainerID: cid, Runtime: CRIO, QoS: Burstable}},
		{"systemd docker",
			"kubepods.slice/kubepods-pod" + uidU + ".slice/docker-" + cid + ".scope",
			Container{PodUID: uid, ContainerID: cid, Runtime: Docker, QoS: Guaranteed}},
		{"systemd static pod",
			"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + static + ".slice/cri-containerd-" + cid + ".scope",
			Container{PodUID: static, ContainerID: cid, Runtime: Containerd, QoS: Burstable}},
		{"kind prefix",
			"kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
			Container{PodUID: uid, ContainerID: cid, Runtime: Containerd, QoS: BestEffort}},
		{"system.slice prefix",
			"system.slice/kubepods.slice/kubepods-pod" + uidU + ".slice/crio-" + cid + ".scope",
			Container{PodUID: uid, ContainerID: cid, Runtime: CRIO, QoS: Guaranteed}},
		{"cgroupfs burstable",
			"kubepods/burstable/pod" + uid + "/" + cid,
			Container{PodUID: uid, ContainerID: cid, QoS: Burstable}},
		{"cgroupfs guaranteed",
			"kubepods/pod" + uid + "/" + cid,
			Container{PodUID: uid, ContainerID: cid, QoS: Guaranteed}},
		{"cgroupfs besteffort, trailing slash",
			"kubepods/besteffort/pod" + uid + "/" + cid + "/",
			Container{PodUID: uid, ContainerID: cid, QoS: BestEffort}},
		{"cgroupfs prefix, static pod",
			"kubelet/kubepods/pod" + static + "/" + cid,
			Container{PodUID: static, ContainerID: cid, QoS: Guaranteed}},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			got, found := Parse(tc.path)
			tc.want.Path = strings.Trim(tc.path, "/")
			if !found || got != tc.want {
				t.Fatalf("Parse(%q) = %+v, %v; want %+v", tc.path, got, found, tc.want)
			}
		})
	}

	bad := map[string]string{
		"empty":                          "",
		"root":                           "/",
		"only kubepods":                  "kubepods.slice",
		"pod, no container":              "kubepods.slice/kubepods-pod" + uidU + ".slice",
		"crio conmon":                    "kubepods.slice/kubepods-pod" + uidU + ".slice/crio-conmon-" + cid + ".scope",
		"short container id":             "kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + cid[:63] + ".scope",
		"upper container id":             "kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + strings.ToUpper(cid) + ".scope",
		"missing container id":           "kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-.scope",
		"unknown runtime":                "kubepods.slice/kubepods-pod" + uidU + ".slice/podman-" + cid + ".scope",
		"not a scope":                    "kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + cid,
		"extra component":                "kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope/init",
		"dotdot":                         "kubepods.slice/../kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
		"dot":                            "kubepods.slice/./kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
		"double slash":                   "kubepods.slice//kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
		"uid with dashes":                "kubepods.slice/kubepods-pod" + uid + ".slice/cri-containerd-" + cid + ".scope",
		"uid too short":                  "kubepods.slice/kubepods-pod" + uidU[:35] + ".slice/cri-containerd-" + cid + ".scope",
		"uid bad charset":                "kubepods.slice/kubepods-pod" + strings.Replace(uidU, "6", "g", 1) + ".slice/cri-containerd-" + cid + ".scope",
		"uid misplaced sep":              "kubepods.slice/kubepods-pod" + "6f1c2a4e3_b5d_4e7f_8a9b_0c1d2e3f4a5b" + ".slice/cri-containerd-" + cid + ".scope",
		"qos slice missing":              "kubepods.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
		"qos slice mismatch":             "kubepods.slice/kubepods-besteffort.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
		"unknown qos":                    "kubepods.slice/kubepods-gold.slice/kubepods-gold-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
		"no kubepods slice":              "kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
		"wrong parent slice":             "system.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
		"not kubepods":                   "user.slice/user-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
		"cgroupfs no kubepods":           "burstable/pod" + uid + "/" + cid,
		"cgroupfs no kubepods, short id": "burstable/pod" + uid + "/" + cid[:10],
		"cgroupfs bad id":                "kubepods/burstable/pod" + uid + "/" + cid[:12],
		"cgroupfs uid underscores":       "kubepods/burstable/pod" + uidU + "/" + cid,
		"cgroupfs uid length":            "kubepods/pod" + uid + "0/" + cid,
		"cgroupfs extra":                 "kubepods/pod" + uid + "/" + cid + "/x",
		"cgroupfs scope name":            "kubepods/pod" + uid + "/cri-containerd-" + cid + ".scope",
		"systemd bare id":                "kubepods.slice/kubepods-pod" + uidU + ".slice/" + cid,
		"nul byte":                       "kubepods/pod" + uid + "/" + cid[:63] + "\x00",
	}
	for name, p := range bad {
		t.Run("bad "+name, func(t *testing.T) {
			if got, found := Parse(p); found {
				t.Fatalf("Parse(%q) = %+v, want not ok", p, got)
			}
		})
	}
}

func TestParsePod(t *testing.T) {
	for _, tc := range []struct{ path, uid, qos string }{
		{"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice", uid, Burstable},
		{"kubepods.slice/kubepods-pod" + uidU + ".slice", uid, Guaranteed},
		{"kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidU + ".slice", uid, BestEffort},
		{"kubepods/besteffort/pod" + uid, uid, BestEffort},
		{"/kubepods/pod" + static, static, Guaranteed},
	} {
		u, q, ok := ParsePod(tc.path)
		if !ok || u != tc.uid || q != tc.qos {
			t.Errorf("ParsePod(%q) = %q, %q, %v; want %q, %q", tc.path, u, q, ok, tc.uid, tc.qos)
		}
	}
	for _, p := range []string{
		"", "kubepods", "kubepods.slice", "kubepods/burstable",
		"kubepods/pod" + uid + "/" + cid, // a container, not a pod
		"kubepods.slice/kubepods-burstable.slice",
		"kubepods/burstable/pod" + uid[:30],
	} {
		if u, q, ok := ParsePod(p); ok {
			t.Errorf("ParsePod(%q) = %q, %q; want not ok", p, u, q)
		}
	}
}

// TestContainerPath checks the builders produce what Parse reads, for every
// driver, QoS class and runtime.
func TestContainerPath(t *testing.T) {
	for _, d := range []Driver{Systemd, Cgroupfs} {
		for _, q := range []string{Guaranteed, Burstable, BestEffort} {
			for _, rt := range []string{Containerd, CRIO, Docker} {
				p := ContainerPath(d, q, uid, rt, cid)
				c, ok := Parse(p)
				want := Container{PodUID: uid, ContainerID: cid, Runtime: rt, QoS: q, Path: p}
				if d == Cgroupfs {
					want.Runtime = ""
				}
				if !ok || c != want {
					t.Errorf("Parse(ContainerPath(%s, %s, %s)) = %+v, %v; want %+v", d, q, rt, c, ok, want)
				}
				if u, pq, ok := ParsePod(PodPath(d, q, uid)); !ok || u != uid || pq != q {
					t.Errorf("ParsePod(PodPath(%s, %s)) = %q, %q, %v", d, q, u, pq, ok)
				}
			}
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, d := range []Driver{Systemd, Cgroupfs} {
		for _, q := range []string{Guaranteed, Burstable, BestEffort} {
			f.Add(ContainerPath(d, q, uid, CRIO, cid))
			f.Add(PodPath(d, q, static))
		}
	}
	f.Add("kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod" + uidU + ".slice/docker-" + cid + ".scope")
	f.Add("kubepods.slice/kubepods-pod" + uidU + ".slice/crio-conmon-" + cid + ".scope")
	f.Add("/../kubepods//pod")
	f.Add("")
	f.Fuzz(func(t *testing.T, p string) {
		c, ok := Parse(p)
		if u, q, pok := ParsePod(p); pok && (u == "" || q == "") {
			t.Fatalf("ParsePod(%q) ok with empty fields", p)
		}
		if !ok {
			return
		}
		if c.PodUID == "" || c.ContainerID == "" || c.QoS == "" || c.ID != 0 {
			t.Fatalf("Parse(%q) = %+v: ok with empty fields", p, c)
		}
		// Its own Path parses to the same container.
		if again, ok := Parse(c.Path); !ok || again != c {
			t.Fatalf("Parse(%q) = %+v, re-parsing its Path gives %+v, %v", p, c, again, ok)
		}
		// And so does the kubelet path built from its fields.
		d := Cgroupfs
		if c.Runtime != "" {
			d = Systemd
		}
		built := ContainerPath(d, c.QoS, c.PodUID, c.Runtime, c.ContainerID)
		again, ok := Parse(built)
		again.Path = c.Path
		if !ok || again != c {
			t.Fatalf("Parse(%q) = %+v; built %q parses to %+v, %v", p, c, built, again, ok)
		}
		// The pod is the container's parent.
		if u, q, ok := ParsePod(c.Path[:strings.LastIndexByte(c.Path, '/')]); !ok || u != c.PodUID || q != c.QoS {
			t.Fatalf("parent of %q: ParsePod = %q, %q, %v", c.Path, u, q, ok)
		}
	})
}
