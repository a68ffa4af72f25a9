package enforce

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/sensor/netns"
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
	defer netns.Close(nss)
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
// every namespace, with a set of iterators of its own: their target map
// holds one cgroup.
func (e *Enforcer) destroyByIterator(cgid uint64, o Options, nss []netns.NS) (int, error) {
	its, err := e.iters.get()
	if err != nil {
		return 0, err
	}
	defer e.iters.put(its)
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
			err := ns.Run(func() (err error) { r, err = it.Open(); return err })
			if err != nil {
				it.Close()
				return total, fmt.Errorf("open iterator in %s: %w", ns.Name, err)
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

// cgroupNetns opens the network namespaces of the cgroup's processes and
// its descendants' (the calling process's own when there are none). The
// caller closes them (netns.Close).
func cgroupNetns(cgroupPath string) ([]netns.NS, error) {
	nss, err := netns.OfCgroup(cgroupPath)
	if err != nil || len(nss) > 0 {
		return nss, err
	}
	self, err := netns.Self()
	if err != nil {
		return nil, err
	}
	return []netns.NS{self}, nil
}
