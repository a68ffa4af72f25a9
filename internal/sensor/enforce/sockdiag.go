package enforce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path/filepath"
	"slices"
	"syscall"
	"unsafe"

	"github.com/bulkhead-dev/bulkhead/internal/sensor/netns"
	"golang.org/x/sys/unix"
)

// The fallback for kernels without bpf_sock_destroy (before 6.5): dump the
// namespace's TCP and UDP sockets with sock_diag, keep those whose cgroup id
// is the cgroup's or a descendant's, and destroy each with SOCK_DESTROY
// (needs CONFIG_INET_DIAG_DESTROY and Linux 5.7 for the cgroup id in dumps).

// linux/inet_diag.h
type inetDiagSockID struct {
	Sport  [2]byte
	Dport  [2]byte
	Src    [16]byte
	Dst    [16]byte
	If     uint32
	Cookie [2]uint32
}

type inetDiagReqV2 struct {
	Family   uint8
	Protocol uint8
	Ext      uint8
	Pad      uint8
	States   uint32
	ID       inetDiagSockID
}

type inetDiagMsg struct {
	Family  uint8
	State   uint8
	Timer   uint8
	Retrans uint8
	ID      inetDiagSockID
	Expires uint32
	RQueue  uint32
	WQueue  uint32
	UID     uint32
	Inode   uint32
}

const (
	inetDiagCgroupID = 21 // INET_DIAG_CGROUP_ID
	tcpTimeWait      = 6
	tcpClose         = 7
	tcpListen        = 10
	tcpNewSynRecv    = 12
)

// destroyBySockDiag destroys the cgroup's sockets in every namespace.
func destroyBySockDiag(cgroupPath string, o Options, nss []netns.NS) (int, error) {
	ids := map[uint64]bool{}
	err := filepath.WalkDir(cgroupPath, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if id, err := cgroupID(path); err == nil {
			ids[id] = true
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	total := 0
	for _, ns := range nss {
		var fd int
		err := ns.Run(func() (err error) {
			fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("sock_diag socket: %w", err)
		}
		n, err := destroyInNetns(fd, ids, o)
		unix.Close(fd)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func destroyInNetns(fd int, ids map[uint64]bool, o Options) (int, error) {
	n := 0
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			socks, err := dumpSockets(fd, family, proto, ids, o)
			if err != nil {
				return n, err
			}
			for _, s := range socks {
				req := inetDiagReqV2{Family: family, Protocol: proto, States: ^uint32(0), ID: s.ID}
				err := diagRequest(fd, unix.SOCK_DESTROY, unix.NLM_F_REQUEST|unix.NLM_F_ACK, &req, nil)
				switch {
				case err == nil:
					n++
				case errors.Is(err, unix.ENOENT):
					// closed meanwhile
				case errors.Is(err, unix.EOPNOTSUPP):
					return n, fmt.Errorf("SOCK_DESTROY not supported (kernel without CONFIG_INET_DIAG_DESTROY): %w", err)
				default:
					return n, fmt.Errorf("SOCK_DESTROY: %w", err)
				}
			}
		}
	}
	return n, nil
}

// dumpSockets lists the sockets of one family and protocol that belong to
// the cgroups ids and have a peer that is not an allowed DNS endpoint.
func dumpSockets(fd int, family, proto uint8, ids map[uint64]bool, o Options) ([]inetDiagMsg, error) {
	var out []inetDiagMsg
	sawSocket, sawCgroup := false, false
	req := inetDiagReqV2{Family: family, Protocol: proto, States: ^uint32(0)}
	err := diagRequest(fd, unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, &req, func(data []byte) {
		if len(data) < int(unsafe.Sizeof(inetDiagMsg{})) {
			return
		}
		msg := *(*inetDiagMsg)(unsafe.Pointer(&data[0]))
		// Time-wait and request sockets carry no cgroup id on any kernel.
		if proto != unix.IPPROTO_TCP || (msg.State != tcpTimeWait && msg.State != tcpNewSynRecv) {
			sawSocket = true
		}
		cgid, ok := cgroupAttr(data[nlmAlign(int(unsafe.Sizeof(msg))):])
		if !ok {
			return
		}
		sawCgroup = true
		if !ids[cgid] {
			return
		}
		if proto == unix.IPPROTO_TCP {
			switch msg.State {
			case tcpListen, tcpTimeWait, tcpClose, tcpNewSynRecv:
				return
			}
		}
		if msg.ID.Dport == [2]byte{} {
			return // unconnected UDP
		}
		if peerAllowed(family, msg.ID, o) {
			return
		}
		out = append(out, msg)
	})
	if err != nil {
		return nil, err
	}
	if sawSocket && !sawCgroup {
		// Claiming success here would hide that the cgroup's sockets could
		// not be told apart from the others.
		return nil, errors.New("sock_diag does not report socket cgroup ids on this kernel (needs Linux 5.7)")
	}
	return out, nil
}

func peerAllowed(family uint8, id inetDiagSockID, o Options) bool {
	var addr netip.Addr
	if family == unix.AF_INET {
		addr = netip.AddrFrom4([4]byte(id.Dst[:4]))
	} else {
		addr = netip.AddrFrom16(id.Dst).Unmap()
	}
	port := binary.BigEndian.Uint16(id.Dport[:])
	return slices.ContainsFunc(o.DNS, func(ap netip.AddrPort) bool {
		return ap.Port() == port && ap.Addr().Unmap() == addr
	})
}

// cgroupAttr finds INET_DIAG_CGROUP_ID among the message's attributes.
func cgroupAttr(b []byte) (uint64, bool) {
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:])
		if l < unix.SizeofRtAttr || l > len(b) {
			return 0, false
		}
		if typ == inetDiagCgroupID && l >= unix.SizeofRtAttr+8 {
			return binary.NativeEndian.Uint64(b[unix.SizeofRtAttr:]), true
		}
		b = b[min(nlmAlign(l), len(b)):]
	}
	return 0, false
}

func nlmAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// diagRequest sends one sock_diag request and reads the answer until done,
// calling each for every message of a dump. An NLMSG_ERROR answer with a
// non-zero code is returned as that errno.
func diagRequest(fd int, typ uint16, flags uint16, req *inetDiagReqV2, each func([]byte)) error {
	hdr := unix.NlMsghdr{
		Len:   uint32(unix.SizeofNlMsghdr + unsafe.Sizeof(*req)),
		Type:  typ,
		Flags: flags,
		Seq:   1,
	}
	buf := make([]byte, hdr.Len)
	*(*unix.NlMsghdr)(unsafe.Pointer(&buf[0])) = hdr
	*(*inetDiagReqV2)(unsafe.Pointer(&buf[unix.SizeofNlMsghdr])) = *req
	if err := unix.Sendto(fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag send: %w", err)
	}
	rb := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, rb, 0)
		if err != nil {
			return fmt.Errorf("sock_diag receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(rb[:n])
		if err != nil {
			return fmt.Errorf("sock_diag parse: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return errors.New("sock_diag: short error message")
				}
				if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
					return unix.Errno(-code)
				}
				return nil // an ACK
			default:
				if each != nil {
					each(m.Data)
				}
			}
		}
		if flags&unix.NLM_F_DUMP == 0 && flags&unix.NLM_F_ACK == 0 {
			return nil
		}
	}
}
