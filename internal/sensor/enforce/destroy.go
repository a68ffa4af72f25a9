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
	defer closeNetns(nss)
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
func (e *Enforcer) destroyByIterator(cgid uint64, o Options, nss []netns) (int, error) {
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
				return total, fmt.Errorf("open iterator in %s: %w", ns.name, err)
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

// netns is a network namespace held open, so it can be entered even after
// the process it was found through has exited.
type netns struct {
	name string // /proc/<pid>/ns/net at the time it was opened
	f    *os.File
}

func closeNetns(nss []netns) {
	for _, ns := range nss {
		ns.f.Close()
	}
}

// cgroupNetns opens the network namespace of one process per distinct
// namespace among the processes of the cgroup and its descendants (the
// calling process's own when the cgroup has none). A process that exits
// meanwhile is skipped; a namespace already open stays enterable. The
// caller closes them (closeNetns).
func cgroupNetns(cgroupPath string) ([]netns, error) {
	seen := map[uint64]bool{}
	var out []netns
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
			name := fmt.Sprintf("/proc/%d/ns/net", pid)
			nsf, err := os.Open(name)
			if err != nil {
				continue // exited, or a kernel thread
			}
			var st unix.Stat_t
			if err := unix.Fstat(int(nsf.Fd()), &st); err != nil || seen[st.Ino] {
				nsf.Close()
				continue
			}
			seen[st.Ino] = true
			out = append(out, netns{name: name, f: nsf})
		}
		return nil
	})
	if err != nil {
		closeNetns(out)
		return nil, err
	}
	if len(out) == 0 {
		nsf, err := os.Open("/proc/self/ns/net")
		if err != nil {
			return nil, err
		}
		out = append(out, netns{name: "/proc/self/ns/net", f: nsf})
	}
	return out, nil
}

// inNetns runs fn on a thread switched into the network namespace ns.
func inNetns(ns netns, fn func() error) error {
	var cur, target unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &cur); err != nil {
		return err
	}
	if err := unix.Fstat(int(ns.f.Fd()), &target); err != nil {
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
	if err := unix.Setns(int(ns.f.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace %s (needs CAP_SYS_ADMIN): %w", ns.name, err)
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
