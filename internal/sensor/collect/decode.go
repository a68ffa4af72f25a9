package collect

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// Trigram is three consecutive system-call numbers of one thread, oldest first.
type Trigram [3]uint16

func trigramFromKey(v uint64) Trigram {
	return Trigram{uint16(v >> 32), uint16(v >> 16), uint16(v)}
}

// String names the calls, e.g. "openat read close".
func (t Trigram) String() string {
	return SyscallName(t[0]) + " " + SyscallName(t[1]) + " " + SyscallName(t[2])
}

// MaxSyscall is the highest system call number SyscallName knows.
const MaxSyscall = uint16(len(syscallNamesX86_64) - 1)

// SyscallName names an x86_64 system-call number; unknown numbers are "sys_<nr>".
func SyscallName(nr uint16) string {
	if int(nr) < len(syscallNamesX86_64) && syscallNamesX86_64[nr] != "" {
		return syscallNamesX86_64[nr]
	}
	return "sys_" + strconv.Itoa(int(nr))
}

// Event is one record from the kernel: exactly one of Exec and Conn is set.
type Event struct {
	CgroupID uint64
	// Time is the wall-clock time of the record; Run sets it from Mono.
	Time time.Time
	// Mono is CLOCK_MONOTONIC when the kernel wrote the record.
	Mono time.Duration
	Exec *Exec
	Conn *Conn
}

// Exec is a process that called execve in a tracked cgroup.
type Exec struct {
	PID, PPID, UID uint32
	// Binary is the path given to execve (bprm->filename), e.g. "/bin/cat".
	Binary string
	// Parent is the parent's comm (at most 15 bytes), ParentExe the base name
	// of the parent's executable file.
	Parent    string
	ParentExe string
	Args      []string
	// ArgsTruncated: argv was longer than the kernel reads (ArgsBytes) or
	// than Options.ArgsMax; the last argument may be cut.
	ArgsTruncated bool
}

// Conn is an outbound connection (TCP connect, first UDP send to a
// destination in an interval) or a listening socket.
type Conn struct {
	PID uint32
	// Family is AF_INET (2) or AF_INET6 (10).
	Family int
	// Addr is the destination, or for Listen the bound local address.
	Addr     netip.Addr
	Port     uint16
	Protocol string // "TCP" | "UDP"
	Listen   bool
}

// Record layout, as written by bpf/collect.bpf.c (little-endian on the
// supported targets). decode_test.go checks it against the generated types.
const (
	recExec = 1
	recConn = 2

	hdrSize = 24

	execFilenameOff = hdrSize + 16
	filenameLen     = 256
	commLen         = 16
	exeLen          = 64
	// ArgsBytes is how many bytes of argv the kernel reads per exec.
	ArgsBytes       = 1024
	execParentOff   = execFilenameOff + filenameLen
	execParentExe   = execParentOff + commLen
	execArgsOff     = execParentExe + exeLen
	execRecordSize  = execArgsOff + ArgsBytes
	connRecordSize  = hdrSize + 24
	afINET          = 2
	afINET6         = 10
	ipprotoTCP      = 6
	ipprotoUDP      = 17
	maxArgsRecorded = ArgsBytes / 2 // every argument takes at least its NUL
)

// ErrMalformed is wrapped by every DecodeRecord error.
var ErrMalformed = errors.New("malformed record")

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// DecodeRecord decodes one ring-buffer record. It is pure: it sets Mono, not
// Time, and keeps every argument the kernel sent.
func DecodeRecord(b []byte) (Event, error) {
	le := binary.LittleEndian
	if len(b) < hdrSize {
		return Event{}, malformed("%d bytes, shorter than the %d-byte header", len(b), hdrSize)
	}
	typ, pid := le.Uint32(b[0:]), le.Uint32(b[4:])
	ev := Event{CgroupID: le.Uint64(b[8:])}
	ts := le.Uint64(b[16:])
	if ts > uint64(1<<63-1) {
		return Event{}, malformed("timestamp %d out of range", ts)
	}
	ev.Mono = time.Duration(ts)
	switch typ {
	case recExec:
		if len(b) != execRecordSize {
			return Event{}, malformed("exec record of %d bytes, want %d", len(b), execRecordSize)
		}
		e, err := decodeExec(b, pid)
		if err != nil {
			return Event{}, err
		}
		ev.Exec = e
	case recConn:
		if len(b) != connRecordSize {
			return Event{}, malformed("connection record of %d bytes, want %d", len(b), connRecordSize)
		}
		c, err := decodeConn(b, pid)
		if err != nil {
			return Event{}, err
		}
		ev.Conn = c
	default:
		return Event{}, malformed("unknown record type %d", typ)
	}
	return ev, nil
}

func decodeExec(b []byte, pid uint32) (*Exec, error) {
	le := binary.LittleEndian
	e := &Exec{PID: pid, PPID: le.Uint32(b[24:]), UID: le.Uint32(b[28:])}
	argsLen, trunc := le.Uint32(b[32:]), le.Uint32(b[36:])
	if argsLen > ArgsBytes {
		return nil, malformed("args length %d exceeds %d", argsLen, ArgsBytes)
	}
	if trunc > 1 {
		return nil, malformed("args truncation flag %d", trunc)
	}
	var err error
	if e.Binary, err = cString(b[execFilenameOff:execParentOff], "filename"); err != nil {
		return nil, err
	}
	if e.Parent, err = cString(b[execParentOff:execParentExe], "parent comm"); err != nil {
		return nil, err
	}
	if e.ParentExe, err = cString(b[execParentExe:execArgsOff], "parent exe"); err != nil {
		return nil, err
	}
	e.ArgsTruncated = trunc == 1
	e.Args = splitArgs(b[execArgsOff:execArgsOff+int(argsLen)], e.ArgsTruncated)
	return e, nil
}

// splitArgs splits NUL-terminated argv. A cut argv ends without a NUL: its
// last piece is kept as it is.
func splitArgs(b []byte, truncated bool) []string {
	if len(b) == 0 {
		return nil
	}
	if !truncated && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	args := make([]string, 0, min(bytes.Count(b, []byte{0})+1, maxArgsRecorded))
	for a := range bytes.SplitSeq(b, []byte{0}) {
		args = append(args, string(a))
	}
	return args
}

func cString(b []byte, what string) (string, error) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", malformed("%s is not NUL-terminated", what)
	}
	return string(b[:i]), nil
}

func decodeConn(b []byte, pid uint32) (*Conn, error) {
	le := binary.LittleEndian
	c := &Conn{PID: pid, Family: int(le.Uint16(b[24:])), Port: le.Uint16(b[26:])}
	switch b[28] {
	case ipprotoTCP:
		c.Protocol = "TCP"
	case ipprotoUDP:
		c.Protocol = "UDP"
	default:
		return nil, malformed("protocol %d", b[28])
	}
	switch b[29] {
	case 0:
	case 1:
		c.Listen = true
	default:
		return nil, malformed("listen flag %d", b[29])
	}
	addr := b[32:48]
	switch c.Family {
	case afINET:
		c.Addr = netip.AddrFrom4([4]byte(addr[:4]))
	case afINET6:
		c.Addr = netip.AddrFrom16([16]byte(addr))
	default:
		return nil, malformed("address family %d", c.Family)
	}
	return c, nil
}
