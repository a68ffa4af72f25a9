package nodekit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// A process started in a kwok pod's container runs inside the cgroup at the
// kubelet's path, and Close leaves nothing behind: no process, no cgroup,
// no bpffs mount.
func TestContainerProcessAndCleanup(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("nodekit needs root, cgroup v2 and BTF: %v (CI runs it as root)", err)
	}
	k, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = k.Close()
		}
	})
	pod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "shop-1", UID: types.UID("0d4e0f7a-1b2c-4d5e-8f90-a1b2c3d4e5f6")}}
	c, err := k.Container(pod)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(c.Rel, "kubepods-burstable-pod0d4e0f7a_1b2c_4d5e_8f90_a1b2c3d4e5f6.slice/cri-containerd-"+c.ID+".scope") {
		t.Fatalf("cgroup %s is not at the kubelet's systemd/containerd path", c.Rel)
	}
	p, err := c.Start("sleep", "sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.Cmd.Process.Pid), "cgroup"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "::"+strings.TrimPrefix(k.Root, UnifiedRoot())+"/"+c.Rel+"\n") {
		t.Fatalf("the process is not in its container's cgroup %s:\n%s", c.Rel, b)
	}
	if pins := k.Pins(); len(pins) != 0 {
		t.Fatalf("fresh bpffs has pins: %v", pins)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the process still runs after Close")
	}
	if _, err := os.Stat(k.Root); !os.IsNotExist(err) {
		t.Fatalf("cgroup root %s still there after Close (%v)", k.Root, err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(k.PinDir, &st); err == nil && st.Type == 0xcafe4a11 { // BPF_FS_MAGIC
		t.Fatalf("bpffs still mounted at %s after Close", k.PinDir)
	}
}

// Load counts pages served and failures, and Stop ends it.
func TestLoad(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ld := StartLoad(context.Background(), srv.URL, "/index.html", "/missing")
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, fail, last := ld.Stats()
		if ok >= 2 && fail >= 2 {
			if last == nil || !strings.Contains(last.Error(), "404") {
				t.Fatalf("last failure %v, want the 404", last)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %d served, %d failed", ok, fail)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ld.Stop()
	n := hits.Load()
	time.Sleep(200 * time.Millisecond)
	if hits.Load() != n {
		t.Fatalf("requests after Stop: %d → %d", n, hits.Load())
	}
}
