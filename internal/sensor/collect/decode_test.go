package collect

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"
	"unsafe"
)

// The decoder's offsets must match the C structs, as bpf2go saw them.
func TestRecordLayoutMatchesBPF(t *testing.T) {
	var e collectExecEvent
	var c collectConnEvent
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"exec size", unsafe.Sizeof(e), execRecordSize},
		{"exec ppid", unsafe.Offsetof(e.Ppid), 24},
		{"exec uid", unsafe.Offsetof(e.Uid), 28},
		{"exec args_len", unsafe.Offsetof(e.ArgsLen), 32},
		{"exec args_trunc", unsafe.Offsetof(e.ArgsTrunc), 36},
		{"exec filename", unsafe.Offsetof(e.Filename), execFilenameOff},
		{"exec parent_comm", unsafe.Offsetof(e.ParentComm), execParentOff},
		{"exec parent_exe", unsafe.Offsetof(e.ParentExe), execParentExe},
		{"exec args", unsafe.Offsetof(e.Args), execArgsOff},
		{"exec args size", unsafe.Sizeof(e.Args), ArgsBytes},
		{"header size", unsafe.Sizeof(e.H), hdrSize},
		{"header cgroup", unsafe.Offsetof(e.H.Cgroup), 8},
		{"header ts", unsafe.Offsetof(e.H.Ts), 16},
		{"conn size", unsafe.Sizeof(c), connRecordSize},
		{"conn family", unsafe.Offsetof(c.Family), 24},
		{"conn port", unsafe.Offsetof(c.Port), 26},
		{"conn protocol", unsafe.Offsetof(c.Protocol), 28},
		{"conn listen", unsafe.Offsetof(c.Listen), 29},
		{"conn addr", unsafe.Offsetof(c.Addr), 32},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: BPF layout %d, decoder %d", tc.name, tc.got, tc.want)
		}
	}
}

func cstr[T ~[]int8](dst T, s string) {
	for i := range min(len(s), len(dst)-1) {
		dst[i] = int8(s[i])
	}
}

func execRecord(cg uint64, binary, parent string, args []byte, trunc bool) []byte {
	var e collectExecEvent
	e.H.Type, e.H.Pid, e.H.Cgroup, e.H.Ts = recExec, 42, cg, uint64(5*time.Second)
	e.Ppid, e.Uid = 41, 1000
	cstr(e.Filename[:], binary)
	cstr(e.ParentComm[:], parent)
	cstr(e.ParentExe[:], parent)
	for i, b := range args {
		e.Args[i] = int8(b)
	}
	e.ArgsLen = uint32(len(args))
	if trunc {
		e.ArgsTrunc = 1
	}
	return encode(e)
}

func connRecord(cg uint64, family uint16, addr netip.Addr, port uint16, proto uint8, listen bool) []byte {
	var c collectConnEvent
	c.H.Type, c.H.Pid, c.H.Cgroup, c.H.Ts = recConn, 7, cg, 1
	c.Family, c.Port, c.Protocol = family, port, proto
	if listen {
		c.Listen = 1
	}
	a := addr.AsSlice()
	copy(c.Addr[:], a)
	return encode(c)
}

func encode(v any) []byte {
	var b bytes.Buffer
	if err := binary.Write(&b, binary.LittleEndian, v); err != nil {
		panic(err)
	}
	return b.Bytes()
}

func TestDecodeRecord(t *testing.T) {
	ev, err := DecodeRecord(execRecord(9, "/bin/cat", "sh", []byte("/bin/cat\x00/etc/hostname\x00"), false))
	if err != nil {
		t.Fatal(err)
	}
	want := Exec{PID: 42, PPID: 41, UID: 1000, Binary: "/bin/cat", Parent: "sh", ParentExe: "sh", Args: []string{"/bin/cat", "/etc/hostname"}}
	if ev.CgroupID != 9 || ev.Mono != 5*time.Second || ev.Conn != nil || ev.Exec == nil ||
		ev.Exec.Binary != want.Binary || ev.Exec.Parent != want.Parent || ev.Exec.PID != 42 || ev.Exec.PPID != 41 ||
		ev.Exec.UID != 1000 || !slices.Equal(ev.Exec.Args, want.Args) || ev.Exec.ArgsTruncated {
		t.Errorf("exec = %+v %+v", ev, ev.Exec)
	}

	ev, err = DecodeRecord(execRecord(9, "/bin/x", "sh", []byte("/bin/x\x00-a\x00"), false))
	if err != nil || !slices.Equal(ev.Exec.Args, []string{"/bin/x", "-a"}) {
		t.Errorf("args: %q, %v", ev.Exec.Args, err)
	}
	ev, err = DecodeRecord(execRecord(9, "/bin/x", "sh", []byte("/bin/x\x00\x00lo"), true))
	if err != nil || !slices.Equal(ev.Exec.Args, []string{"/bin/x", "", "lo"}) || !ev.Exec.ArgsTruncated {
		t.Errorf("cut args: %q, %v", ev.Exec.Args, err)
	}

	v6 := netip.MustParseAddr("2001:db8::1")
	ev, err = DecodeRecord(connRecord(3, afINET6, v6, 53, ipprotoUDP, false))
	if err != nil || ev.Conn == nil || ev.Exec != nil || ev.Conn.Addr != v6 || ev.Conn.Port != 53 ||
		ev.Conn.Protocol != "UDP" || ev.Conn.Family != afINET6 || ev.Conn.Listen || ev.Conn.PID != 7 {
		t.Errorf("conn v6 = %+v, %v", ev.Conn, err)
	}
	v4 := netip.MustParseAddr("10.0.0.1")
	ev, err = DecodeRecord(connRecord(3, afINET, v4, 8080, ipprotoTCP, true))
	if err != nil || ev.Conn.Addr != v4 || !ev.Conn.Listen || ev.Conn.Protocol != "TCP" {
		t.Errorf("listen v4 = %+v, %v", ev.Conn, err)
	}
}

func TestDecodeRecordRejects(t *testing.T) {
	good := execRecord(1, "/bin/sh", "p", []byte("a\x00"), false)
	conn := connRecord(1, afINET, netip.MustParseAddr("1.2.3.4"), 1, ipprotoTCP, false)
	with := func(b []byte, off int, v ...byte) []byte {
		b = slices.Clone(b)
		copy(b[off:], v)
		return b
	}
	fill := func(b []byte, from, to int) []byte {
		b = slices.Clone(b)
		for i := from; i < to; i++ {
			b[i] = 'x'
		}
		return b
	}
	for name, b := range map[string][]byte{
		"empty":                  nil,
		"short header":           good[:hdrSize-1],
		"unknown type":           with(good, 0, 99),
		"type zero":              with(good, 0, 0),
		"exec short":             good[:execRecordSize-1],
		"exec long":              append(slices.Clone(good), 0),
		"args too long":          with(good, 32, 0x01, 0x04), // 1025
		"bad truncation flag":    with(good, 36, 2),
		"filename without NUL":   fill(good, execFilenameOff, execParentOff),
		"parent without NUL":     fill(good, execParentOff, execParentExe),
		"parent exe without NUL": fill(good, execParentExe, execArgsOff),
		"conn short":             conn[:connRecordSize-1],
		"conn protocol":          with(conn, 28, 1),
		"conn listen flag":       with(conn, 29, 2),
		"conn family":            with(conn, 24, 1),
		"timestamp overflow":     with(conn, 23, 0x80),
		"garbage":                bytes.Repeat([]byte{0xff}, 200),
	} {
		if _, err := DecodeRecord(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func TestSyscallName(t *testing.T) {
	for nr, want := range map[uint16]string{0: "read", 3: "close", 59: "execve", 257: "openat", 231: "exit_group", 110: "getppid", 9999: "sys_9999", 65535: "sys_65535"} {
		if got := SyscallName(nr); got != want {
			t.Errorf("SyscallName(%d) = %q, want %q", nr, got, want)
		}
	}
	if got := (Trigram{257, 0, 3}).String(); got != "openat read close" {
		t.Errorf("Trigram.String = %q", got)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(execRecord(1, "/bin/cat", "sh", []byte("/bin/cat\x00/etc/hostname\x00"), false))
	f.Add(execRecord(1, "/usr/bin/python3", "bash", bytes.Repeat([]byte("ab\x00"), ArgsBytes/3), true))
	f.Add(connRecord(2, afINET, netip.MustParseAddr("127.0.0.1"), 80, ipprotoTCP, false))
	f.Add(connRecord(2, afINET6, netip.MustParseAddr("::1"), 53, ipprotoUDP, true))
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := DecodeRecord(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if (ev.Exec == nil) == (ev.Conn == nil) {
			t.Fatalf("want exactly one of Exec and Conn: %+v", ev)
		}
		if ev.Mono < 0 {
			t.Fatalf("negative time %v", ev.Mono)
		}
		if e := ev.Exec; e != nil {
			n := 0
			for _, a := range e.Args {
				n += len(a) + 1
			}
			if n > ArgsBytes+1 || len(e.Binary) >= filenameLen || len(e.Parent) >= commLen {
				t.Fatalf("exec exceeds the record's bounds: %+v", e)
			}
		}
		if c := ev.Conn; c != nil {
			if !c.Addr.IsValid() || (c.Protocol != "TCP" && c.Protocol != "UDP") ||
				(c.Family == afINET) != c.Addr.Is4() {
				t.Fatalf("conn = %+v", c)
			}
		}
	})
}
