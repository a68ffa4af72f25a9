// Package cgroups maps cgroup v2 directories to the pods and containers the
// kubelet created them for, and reads their resource usage. It understands
// the kubelet's systemd and cgroupfs drivers and the containerd, CRI-O and
// Docker scope names; it needs no cluster and no runtime socket, only the
// cgroup filesystem (the pod UID in the path is what joins it to the API).
package cgroups

import (
	"strings"
)

// QoS classes as they appear in Container.QoS.
const (
	Guaranteed = "guaranteed"
	Burstable  = "burstable"
	BestEffort = "besteffort"
)

// Runtimes as they appear in Container.Runtime ("" for the cgroupfs driver,
// whose directory names carry only the container ID).
const (
	Containerd = "containerd"
	CRIO       = "crio"
	Docker     = "docker"
)

// Driver is the kubelet's cgroup driver, which decides the directory names.
type Driver string

const (
	Systemd  Driver = "systemd"
	Cgroupfs Driver = "cgroupfs"
)

// Container is one container's cgroup.
type Container struct {
	PodUID      string // with dashes, as in the API (static pods: 32 hex digits)
	ContainerID string // 64 hex digits, as in the pod's containerStatuses without the runtime prefix
	Runtime     string // Containerd, CRIO, Docker, or "" (cgroupfs driver)
	QoS         string // Guaranteed, Burstable or BestEffort
	Path        string // relative to the cgroup root, "/"-separated, no leading "/"
	ID          uint64 // cgroup v2 id (inode of the directory; what bpf_get_current_cgroup_id returns); 0 from Parse
}

// scopePrefixes are the systemd scope names of containers, by runtime. CRI-O's
// crio-conmon-<id>.scope holds its monitor, not the container, and fails the
// 64-hex check below.
var scopePrefixes = []struct{ prefix, runtime string }{
	{"cri-containerd-", Containerd},
	{"crio-", CRIO},
	{"docker-", Docker},
}

// Parse recognises the cgroup of a pod's container from its path relative to
// the cgroup root. Anything before the kubepods hierarchy (a systemd slice,
// kind's kubelet.slice) is allowed; nothing after the container is.
func Parse(rel string) (Container, bool) {
	parts, ok := split(rel)
	if !ok || len(parts) < 3 {
		return Container{}, false
	}
	last := parts[len(parts)-1]
	podUID, qos, drv, ok := parsePod(parts[:len(parts)-1])
	if !ok {
		return Container{}, false
	}
	c := Container{PodUID: podUID, QoS: qos, Path: strings.Join(parts, "/")}
	switch drv {
	case Systemd:
		id, found := strings.CutSuffix(last, ".scope")
		if !found {
			return Container{}, false
		}
		for _, p := range scopePrefixes {
			if rest, found := strings.CutPrefix(id, p.prefix); found && isHex(rest, 64) {
				c.ContainerID, c.Runtime = rest, p.runtime
				return c, true
			}
		}
		return Container{}, false
	default:
		if !isHex(last, 64) {
			return Container{}, false
		}
		c.ContainerID = last
		return c, true
	}
}

// ParsePod recognises a pod-level cgroup (the parent of its containers).
func ParsePod(rel string) (podUID, qos string, ok bool) {
	parts, ok := split(rel)
	if !ok {
		return "", "", false
	}
	podUID, qos, _, ok = parsePod(parts)
	return podUID, qos, ok
}

// split cleans rel into its components; "", ".", ".." and empty components
// (other than one leading and one trailing "/") are refused, not resolved.
func split(rel string) ([]string, bool) {
	rel = strings.TrimPrefix(rel, "/")
	rel = strings.TrimSuffix(rel, "/")
	if rel == "" {
		return nil, false
	}
	parts := strings.Split(rel, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return nil, false
		}
	}
	return parts, true
}

// parsePod parses parts whose last element is a pod cgroup, checking that
// the elements before it are the kubepods (and QoS) cgroups of the same driver.
func parsePod(parts []string) (podUID, qos string, drv Driver, ok bool) {
	n := len(parts)
	if n < 2 {
		return "", "", "", false
	}
	pod := parts[n-1]
	if name, found := strings.CutSuffix(pod, ".slice"); found {
		// systemd: <kp>.slice[/<kp>-<qos>.slice]/<kp>[-<qos>]-pod<uid>.slice,
		// where <kp> ends in "kubepods" (kind: kubelet-kubepods).
		i := strings.LastIndex(name, "-pod")
		if i < 0 {
			return "", "", "", false
		}
		uid, ok := podUIDOf(strings.ReplaceAll(name[i+len("-pod"):], "_", "-"))
		if !ok || strings.Contains(name[i+len("-pod"):], "-") {
			return "", "", "", false
		}
		parent := name[:i] // <kp> or <kp>-<qos>
		qos = Guaranteed
		for _, q := range []string{Burstable, BestEffort} {
			if kp, found := strings.CutSuffix(parent, "-"+q); found {
				if n < 3 || parts[n-2] != parent+".slice" {
					return "", "", "", false
				}
				parent, qos = kp, q
				n--
				break
			}
		}
		if !strings.HasSuffix(parent, "kubepods") || parts[n-2] != parent+".slice" {
			return "", "", "", false
		}
		return uid, qos, Systemd, true
	}
	// cgroupfs: kubepods[/<qos>]/pod<uid>
	rest, found := strings.CutPrefix(pod, "pod")
	if !found {
		return "", "", "", false
	}
	uid, ok := podUIDOf(rest)
	if !ok {
		return "", "", "", false
	}
	qos = Guaranteed
	if q := parts[n-2]; q == Burstable || q == BestEffort {
		if n < 3 {
			return "", "", "", false
		}
		qos = q
		n--
	}
	if parts[n-2] != "kubepods" {
		return "", "", "", false
	}
	return uid, qos, Cgroupfs, true
}

// podUIDOf accepts a pod UID as the API writes it: a lowercase UUID
// (8-4-4-4-12) or, for static pods, 32 lowercase hex digits.
func podUIDOf(s string) (string, bool) {
	switch len(s) {
	case 32:
		return s, isHex(s, 32)
	case 36:
		for i := 0; i < 36; i++ {
			switch i {
			case 8, 13, 18, 23:
				if s[i] != '-' {
					return "", false
				}
			default:
				if !isHexDigit(s[i]) {
					return "", false
				}
			}
		}
		return s, true
	}
	return "", false
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isHexDigit(s[i]) {
			return false
		}
	}
	return true
}

func isHexDigit(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

// PodPath is the kubelet's pod cgroup path (relative to the root, without a
// prefix) for a driver: what a test or a demo creates to stand in for a pod.
func PodPath(d Driver, qos, podUID string) string {
	if d == Systemd {
		uid := strings.ReplaceAll(podUID, "-", "_")
		if qos == Guaranteed {
			return "kubepods.slice/kubepods-pod" + uid + ".slice"
		}
		return "kubepods.slice/kubepods-" + qos + ".slice/kubepods-" + qos + "-pod" + uid + ".slice"
	}
	if qos == Guaranteed {
		return "kubepods/pod" + podUID
	}
	return "kubepods/" + qos + "/pod" + podUID
}

// ContainerPath is the path of a container's cgroup under PodPath. With the
// systemd driver runtime picks the scope name (Containerd, CRIO, Docker);
// with cgroupfs it is ignored.
func ContainerPath(d Driver, qos, podUID, runtime, containerID string) string {
	leaf := containerID
	if d == Systemd {
		prefix := "cri-containerd-"
		for _, p := range scopePrefixes {
			if p.runtime == runtime {
				prefix = p.prefix
			}
		}
		leaf = prefix + containerID + ".scope"
	}
	return PodPath(d, qos, podUID) + "/" + leaf
}
