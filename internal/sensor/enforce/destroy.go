package enforce

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// cutSockets destroys the established sockets of the cgroup and its
// descendants, with bpf_sock_destroy iterators where the kernel has them
// and sock_diag's SOCK_DESTROY otherwise, and records the outcome in res.
//
// Socket tables are per network namespace and an iterator or netlink socket
// sees only the namespace it was opened in, so each namespace the cgroup's
// processes live in is entered in turn (a pod has its own).
func (e *Enforcer) cutSockets(cgroupPath string, cgid uint64, o Options, res *Result) {
	nss, err := cgroupNetns(cgroupPath)
	if err != nil {
		res.Reason = fmt.Sprintf("find the cgroup's network namespaces: %v", err)
		return
	}
	var reasons []string
	if e.iterErr == nil {
		n, err := e.destroyByIterator(cgid, o, nss)
		if err == nil {
			res.SocketsDestroyed, res.ConnCut, res.Method = n, true, "bpf_sock_destroy"
			return
		}
		reasons = append(reasons, "bpf_sock_destroy: "+err.Error())
	} else {
		reasons = append(reasons, "bpf_sock_destroy: "+e.iterErr.Error())
	}
	n, err := destroyBySockDiag(cgroupPath, o, nss)
	if err == nil {
		res.SocketsDestroyed, res.ConnCut, res.Method = n, true, "sock_diag"
		res.Reason = "fell back to sock_diag: " + strings.Join(reasons, "; ")
		return
	}
	reasons = append(reasons, "sock_diag: "+err.Error())
	res.SocketsDestroyed = n
	res.Reason = "established connections not cut: " + strings.Join(reasons, "; ")
}

// destroyByIterator points the iterators at the cgroup and runs them in
// every namespace. The caller holds e.mu, so runs do not interleave.
func (e *Enforcer) destroyByIterator(cgid uint64, o Options, nss []string) (int, error) {
	its := e.iters
	if err := its.Target.Put(uint32(0), cgid); err != nil {
		return 0, fmt.Errorf("set iterator target: %w", err)
	}
	if err := syncAllow(its.Allow, o); err != nil {
		return 0, err
	}
	total := 0
	for _, prog := range []*ebpf.Program{its.TCP, its.UDP} {
		it, err := link.AttachIter(link.IterOptions{Program: prog})
		if err != nil {
			return total, fmt.Errorf("attach iterator: %w", err)
		}
		for _, ns := range nss {
			var r io.ReadCloser
			err := inNetns(ns, func() (err error) { r, err = it.Open(); return err })
			if err != nil {
				it.Close()
				return total, fmt.Errorf("open iterator in %s: %w", ns, err)
			}
			n, err := readDestroyed(r)
			r.Close()
			total += n
			if err != nil {
				it.Close()
				return total, err
			}
		}
		it.Close()
	}
	return total, nil
}

// readDestroyed reads the iterator's output: one int32 per socket it tried
// to destroy, 0 or a negative errno. It returns how many were destroyed and
// the first failure.
func readDestroyed(r io.Reader) (int, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return 0, fmt.Errorf("run iterator: %w", err)
	}
	destroyed := 0
	var failed error
	for i := 0; i+4 <= len(b); i += 4 {
		ret := int32(binary.NativeEndian.Uint32(b[i:]))
		switch {
		case ret == 0:
			destroyed++
		case failed == nil:
			failed = fmt.Errorf("bpf_sock_destroy: %w", unix.Errno(-ret))
		}
	}
	return destroyed, failed
}

// cgroupNetns returns /proc/<pid>/ns/net of one process per distinct network
// namespace among the processes of the cgroup and its descendants; the
// calling process's own namespace when the cgroup has none.
func cgroupNetns(cgroupPath string) ([]string, error) {
	seen := map[uint64]bool{}
	var out []string
	err := filepath.WalkDir(cgroupPath, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil // a child cgroup removed meanwhile
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		f, err := os.Open(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return nil
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			pid, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
			if err != nil {
				continue
			}
			ns := fmt.Sprintf("/proc/%d/ns/net", pid)
			var st unix.Stat_t
			if err := unix.Stat(ns, &st); err != nil {
				continue // exited, or a kernel thread
			}
			if !seen[st.Ino] {
				seen[st.Ino] = true
				out = append(out, ns)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		out = append(out, "/proc/self/ns/net")
	}
	return out, nil
}

// inNetns runs fn on a thread switched into the network namespace ns.
func inNetns(ns string, fn func() error) error {
	var cur, target unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &cur); err != nil {
		return err
	}
	if err := unix.Stat(ns, &target); err != nil {
		return err
	}
	if cur.Ino == target.Ino && cur.Dev == target.Dev {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	nsf, err := os.Open(ns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer nsf.Close()
	if err := unix.Setns(int(nsf.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace %s (needs CAP_SYS_ADMIN): %w", ns, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked so the runtime discards it rather than
		// reusing a thread in the wrong namespace.
		return errors.Join(ferr, fmt.Errorf("return to own network namespace: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}
