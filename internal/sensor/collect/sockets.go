package collect

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/sensor/netns"
)

// sockRecordSize is struct sock_record of bpf/collect.bpf.c.
const sockRecordSize = 48

const (
	tcpEstablished = 1
	tcpSynSent     = 2
	tcpListen      = 10
)

// sockRecord is one socket the existing_tcp iterator wrote.
type sockRecord struct {
	cgroup       uint64
	family       int
	lport, rport uint16
	state        uint8
	laddr, raddr netip.Addr
}

func decodeSockRecord(b []byte) (sockRecord, error) {
	if len(b) != sockRecordSize {
		return sockRecord{}, malformed("socket record of %d bytes, want %d", len(b), sockRecordSize)
	}
	le := binary.LittleEndian
	r := sockRecord{cgroup: le.Uint64(b[0:]), family: int(le.Uint16(b[8:])), lport: le.Uint16(b[10:]), rport: le.Uint16(b[12:]), state: b[14]}
	switch r.family {
	case afINET:
		r.laddr, r.raddr = netip.AddrFrom4([4]byte(b[16:20])), netip.AddrFrom4([4]byte(b[32:36]))
	case afINET6:
		r.laddr, r.raddr = netip.AddrFrom16([16]byte(b[16:32])), netip.AddrFrom16([16]byte(b[32:48]))
	default:
		return sockRecord{}, malformed("address family %d", r.family)
	}
	switch r.state {
	case tcpEstablished, tcpSynSent, tcpListen:
	default:
		return sockRecord{}, malformed("socket state %d", r.state)
	}
	return r, nil
}

// socketEvents turns one namespace's iterator output into the cgroup's
// connection events: its listeners, and its connected or connecting sockets
// whose local port no socket of the namespace listens on (an accepted
// connection has its listener's port; an outbound one an ephemeral port or
// one it bound). An accepted connection whose listener has closed since is
// taken for an outbound one. Each destination or listener appears once.
func socketEvents(recs []sockRecord, cgroupID uint64, now time.Time) []Event {
	listening := map[uint16]bool{}
	for _, r := range recs {
		if r.state == tcpListen {
			listening[r.lport] = true
		}
	}
	type key struct {
		addr   netip.Addr
		port   uint16
		listen bool
	}
	seen := map[key]bool{}
	var out []Event
	for _, r := range recs {
		if r.cgroup != cgroupID {
			continue
		}
		k := key{r.raddr, r.rport, false}
		switch {
		case r.state == tcpListen:
			k = key{r.laddr, r.lport, true}
		case listening[r.lport]:
			continue
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, Event{CgroupID: cgroupID, Time: now, Conn: &Conn{
			Family: r.family, Addr: k.addr, Port: k.port, Protocol: "TCP", Listen: k.listen,
		}})
	}
	return out
}

// Sockets returns the TCP connections and listeners a cgroup already has
// open, as connection events stamped now: the tracepoints report only those
// made after Track, so a connection made earlier (a pooled connection, one
// opened before the sensor started) would be missed while learning and look
// new when it reconnects. cgroupPath is the cgroup's directory; socket tables
// are per network namespace, so the iterator is read in each namespace of the
// cgroup's processes (entering one needs CAP_SYS_ADMIN). A cgroup without
// processes has no sockets to report.
func (c *Collector) Sockets(cgroupID uint64, cgroupPath string) ([]Event, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("collect: sockets: collector closed")
	}
	nss, err := netns.OfCgroup(cgroupPath)
	if err != nil {
		return nil, fmt.Errorf("collect: sockets of %s: %w", cgroupPath, err)
	}
	defer netns.Close(nss)
	now := time.Now()
	var out []Event
	for _, ns := range nss {
		var recs []sockRecord
		err := ns.Run(func() error {
			r, err := c.sockIter.Open()
			if err != nil {
				return fmt.Errorf("open socket iterator: %w", err)
			}
			defer r.Close()
			recs, err = readSockRecords(r)
			return err
		})
		if err != nil {
			return out, fmt.Errorf("collect: sockets of %s in %s: %w", cgroupPath, ns.Name, err)
		}
		out = append(out, socketEvents(recs, cgroupID, now)...)
	}
	return out, nil
}

func readSockRecords(r io.Reader) ([]sockRecord, error) {
	br := bufio.NewReaderSize(r, 64*sockRecordSize)
	buf := make([]byte, sockRecordSize)
	var recs []sockRecord
	for {
		if _, err := io.ReadFull(br, buf); err != nil {
			if errors.Is(err, io.EOF) {
				return recs, nil
			}
			return recs, fmt.Errorf("read socket iterator: %w", err)
		}
		rec, err := decodeSockRecord(buf)
		if err != nil {
			return recs, err
		}
		recs = append(recs, rec)
	}
}
