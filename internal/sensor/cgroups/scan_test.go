package cgroups

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// v2Root finds the cgroup v2 hierarchy of this machine (the unified mount of
// a hybrid host first) and skips, saying why, when the test cannot create
// cgroups in it.
func v2Root(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating cgroups needs root")
	}
	for _, r := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		var st syscall.Statfs_t
		if syscall.Statfs(r, &st) == nil && st.Type == 0x63677270 { // CGROUP2_SUPER_MAGIC
			return r
		}
	}
	t.Skip("no cgroup v2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup")
	return ""
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func randUID(t *testing.T) string {
	h := randHex(t, 32)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// mkCgroups creates rel (and its parents) under root, removing every
// directory it created, deepest first, when the test ends.
func mkCgroups(t *testing.T, root, rel string) {
	t.Helper()
	parts := strings.Split(rel, "/")
	for i := range parts {
		dir := filepath.Join(root, filepath.Join(parts[:i+1]...))
		if err := os.Mkdir(dir, 0o755); errors.Is(err, fs.ErrExist) {
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			// Retried: a killed process leaves its cgroup a moment later.
			var err error
			for range 50 {
				if err = os.Remove(dir); err == nil || errors.Is(err, fs.ErrNotExist) {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Errorf("removing cgroup %s: %v", dir, err)
		})
	}
}

// busyIn starts a CPU-bound process inside the cgroup at rel, killed and
// reaped when the test ends (before the cgroups are removed: cleanups run
// last-registered first).
func busyIn(t *testing.T, root, rel string) *exec.Cmd {
	t.Helper()
	fd, err := syscall.Open(filepath.Join(root, rel), syscall.O_DIRECTORY|syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	cmd := exec.Command("/bin/sh", "-c", "while :; do :; done")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting a process in cgroup %s: %v", rel, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

func TestScanAndUsageOnRealCgroups(t *testing.T) {
	root := v2Root(t)
	// A unique prefix slice keeps parallel runs apart; Scan allows a prefix.
	prefix := "bulkhead-test-" + randHex(t, 12) + ".slice"
	uid, cid := randUID(t), randHex(t, 64)
	rel := prefix + "/" + ContainerPath(Systemd, Burstable, uid, Containerd, cid)
	mkCgroups(t, root, rel)
	// A pod's sibling that is not a container (CRI-O's monitor) is not listed.
	mkCgroups(t, root, prefix+"/"+PodPath(Systemd, Burstable, uid)+"/crio-conmon-"+cid+".scope")
	cmd := busyIn(t, root, rel)

	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(root, rel), &st); err != nil {
		t.Fatal(err)
	}
	found := scanFor(t, root, uid)
	if len(found) != 1 {
		t.Fatalf("Scan found %d containers of pod %s, want 1: %+v", len(found), uid, found)
	}
	want := Container{PodUID: uid, ContainerID: cid, Runtime: Containerd, QoS: Burstable, Path: rel, ID: st.Ino}
	if found[0] != want {
		t.Fatalf("Scan = %+v, want %+v", found[0], want)
	}

	idx, err := PodCgroups(root)
	if err != nil || idx[uid] != prefix+"/"+PodPath(Systemd, Burstable, uid) {
		t.Fatalf("PodCgroups[%s] = %q, %v", uid, idx[uid], err)
	}
	if p, ok := idx[randUID(t)]; ok {
		t.Fatalf("PodCgroups names an absent pod: %q", p)
	}

	u1, err := ReadUsage(root, rel)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	u2, err := ReadUsage(root, rel)
	if err != nil {
		t.Fatal(err)
	}
	if u2.Pids < 1 {
		t.Errorf("Pids = %d with process %d in the cgroup", u2.Pids, cmd.Process.Pid)
	}
	r := Rate(u1, u2)
	if r.CPUMillicores <= 0 {
		t.Errorf("CPU rate of a busy loop = %v millicores (usage %d -> %d usec)", r.CPUMillicores, u1.CPUUsec, u2.CPUUsec)
	}
	t.Logf("busy loop: %.0f millicores, %d pids, memory known: %v", r.CPUMillicores, u2.Pids, u2.MemoryKnown)

	if _, err := ReadUsage(root, prefix+"/../x"); err == nil {
		t.Error("ReadUsage accepted a path leaving the root")
	}
	if _, err := ReadUsage(root, prefix+"/absent"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadUsage of an absent cgroup: %v, want fs.ErrNotExist", err)
	}
}

// TestReusedCgroup: a container cgroup removed and created again at the same
// path (a restarted container with a reused ID, or a fast pod recreation) is
// a different cgroup, which the sensor must not confuse with the old one.
func TestReusedCgroup(t *testing.T) {
	root := v2Root(t)
	prefix := "bulkhead-test-" + randHex(t, 12) + ".slice"
	uid, cid := randUID(t), randHex(t, 64)
	rel := prefix + "/" + ContainerPath(Cgroupfs, Guaranteed, uid, "", cid)
	mkCgroups(t, root, rel)
	first := scanFor(t, root, uid)
	if err := os.Remove(filepath.Join(root, rel)); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, rel), 0o755); err != nil {
		t.Fatal(err)
	}
	second := scanFor(t, root, uid)
	if len(first) != 1 || len(second) != 1 {
		t.Fatalf("Scan found %d, then %d containers, want 1 each", len(first), len(second))
	}
	if first[0].ID == second[0].ID {
		t.Fatalf("a reused cgroup path kept ID %d", first[0].ID)
	}
	if first[0].ContainerID != cid || second[0].ContainerID != cid {
		t.Fatalf("container IDs %q, %q, want %q", first[0].ContainerID, second[0].ContainerID, cid)
	}
}

// TestScanToleratesVanishing removes pods while Scan walks: it never fails
// for a directory that went away.
func TestScanToleratesVanishing(t *testing.T) {
	root := v2Root(t)
	prefix := "bulkhead-test-" + randHex(t, 12) + ".slice"
	mkCgroups(t, root, prefix)
	stop := make(chan struct{})
	done := make(chan error)
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			rel := prefix + "/" + ContainerPath(Cgroupfs, BestEffort, randUID(t), "", randHex(t, 64))
			parts := strings.Split(rel, "/")
			var made []string
			for j := 1; j < len(parts); j++ {
				d := filepath.Join(root, filepath.Join(parts[:j+1]...))
				if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
					done <- err
					return
				}
				made = append(made, d)
			}
			for j := len(made) - 1; j >= 1; j-- { // keep <prefix>/kubepods
				if err := os.Remove(made[j]); err != nil {
					done <- err
					return
				}
			}
		}
	}()
	t.Cleanup(func() {
		_ = os.Remove(filepath.Join(root, prefix, "kubepods", BestEffort))
		_ = os.Remove(filepath.Join(root, prefix, "kubepods"))
	})
	for range 200 {
		if _, err := Scan(root); err != nil {
			close(stop)
			if derr := <-done; derr != nil {
				t.Log(derr)
			}
			t.Fatalf("Scan while pods come and go: %v", err)
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func scanFor(t *testing.T, root, uid string) []Container {
	t.Helper()
	all, err := Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	var out []Container
	for _, c := range all {
		if c.PodUID == uid {
			out = append(out, c)
		}
	}
	return out
}

func TestScanBadRoot(t *testing.T) {
	if _, err := Scan(t.TempDir()); err == nil {
		t.Error("Scan of a directory that is not a cgroup hierarchy succeeded")
	}
	if _, err := Scan(filepath.Join(t.TempDir(), "absent")); err == nil {
		t.Error("Scan of an absent root succeeded")
	}
}

// PodCgroups finds every pod's cgroup in one walk, under every QoS class.
func TestPodCgroupsIndex(t *testing.T) {
	root := v2Root(t)
	prefix := "bulkhead-test-" + randHex(t, 12) + ".slice"
	uids := []string{randUID(t), randUID(t), randUID(t)}
	qos := []string{Burstable, BestEffort, Guaranteed}
	mkCgroups(t, root, prefix+"/"+ContainerPath(Systemd, qos[0], uids[0], Containerd, randHex(t, 64)))
	mkCgroups(t, root, prefix+"/"+ContainerPath(Systemd, qos[1], uids[1], Containerd, randHex(t, 64)))
	mkCgroups(t, root, prefix+"/"+PodPath(Systemd, qos[2], uids[2]))
	idx, err := PodCgroups(root)
	if err != nil {
		t.Fatal(err)
	}
	for i, uid := range uids {
		if got, want := idx[uid], prefix+"/"+PodPath(Systemd, qos[i], uid); got != want {
			t.Errorf("PodCgroups[%s] = %q, want %q", uid, got, want)
		}
	}
	if _, ok := idx[randUID(t)]; ok {
		t.Error("PodCgroups names a pod that has no cgroup")
	}
}
