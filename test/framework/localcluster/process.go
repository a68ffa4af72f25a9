package localcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bulkhead-dev/bulkhead/test/framework"
)

// Process is one component of the cluster (or the manager) running as a
// child process, its output in LogPath. A process can be started again
// (the manager, after a kill), appending to the same log.
type Process struct {
	Name    string
	LogPath string
	bin     string
	args    []string
	env     []string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

// startProcess runs bin with args, output to dir/<name>.log. The child gets
// its own process group, so a Ctrl-C reaches only the launcher, which then
// stops everything in order; and it is killed if the launcher dies.
func startProcess(dir, name, bin string, args []string, env []string) (*Process, error) {
	p := &Process{Name: name, LogPath: filepath.Join(dir, name+".log"), bin: bin, args: args, env: env}
	return p, p.start()
}

// start (re)starts the process, appending to its log.
func (p *Process) start() error {
	logFile, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logFile, "==== localcluster: start %s ====\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), p.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return fmt.Errorf("starting %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.err = cmd, done, nil
	go func() {
		err := cmd.Wait()
		_ = logFile.Close()
		p.err = err
		close(done)
	}()
	return nil
}

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM, waits up to grace, then kills the process group.
func (p *Process) Stop(grace time.Duration) {
	if p.cmd == nil {
		return
	}
	if exited, _ := p.Exited(); exited {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill()
	}
}

// Kill sends SIGKILL to the process group and waits for the exit.
func (p *Process) Kill() {
	if exited, _ := p.Exited(); exited {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Alive reports whether the process runs.
func (p *Process) Alive() bool {
	exited, _ := p.Exited()
	return !exited
}

// Pid of the running process.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// RSS returns the current and peak resident set size in bytes (VmRSS,
// VmHWM); zero when the process is gone.
func (p *Process) RSS() (cur, peak int64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			cur = v * 1024
		case "VmHWM:":
			peak = v * 1024
		}
	}
	return cur, peak
}

var gcLine = regexp.MustCompile(`gc \d+ @[0-9.]+s [0-9]+%: .* (\d+)->(\d+)->(\d+) MB`)

// LiveHeap is the heap marked live by the process's last garbage
// collection, in bytes (1 MB resolution), from GODEBUG=gctrace=1 output;
// -1 when no collection was logged.
func (p *Process) LiveHeap() int64 {
	data, _ := os.ReadFile(p.LogPath)
	all := gcLine.FindAllSubmatch(data, -1)
	if len(all) == 0 {
		return -1
	}
	v, _ := strconv.ParseInt(string(all[len(all)-1][3]), 10, 64)
	return v << 20
}

// Logs returns the last max bytes of the process's output.
func (p *Process) Logs(max int64) string {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return err.Error()
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	off := st.Size() - max
	if off < 0 {
		off = 0
	}
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return err.Error()
	}
	return string(buf)
}

// Forbidden returns the distinct API authorization failures ("... is
// forbidden: User ... cannot ...") the process logged from byte offset on: with
// the manager, permissions config/rbac lacks.
func (p *Process) Forbidden(offset int64) []string {
	data, err := os.ReadFile(p.LogPath)
	if err != nil || offset > int64(len(data)) {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, m := range forbiddenRE.FindAllString(string(data[offset:]), -1) {
		m = strings.ReplaceAll(m, `\"`, `"`)
		if !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	return out
}

var forbiddenRE = regexp.MustCompile(`cannot [a-z]+ resource \\?"[^"\\]*\\?" in API group \\?"[^"\\]*\\?"( in the namespace \\?"[^"\\]*\\?"| at the cluster scope)?`)

// waitFor polls check every 100ms until it returns nil, the process exits,
// or the timeout passes.
func (p *Process) waitFor(ctx context.Context, timeout time.Duration, what string, check func(context.Context) error) error {
	err := framework.Wait{What: what, Timeout: timeout, Every: 100 * time.Millisecond}.Until(ctx, func(ctx context.Context) error {
		if exited, err := p.Exited(); exited {
			return framework.Permanent(fmt.Errorf("%s exited (%v) before %s; last output:\n%s", p.Name, err, what, p.Logs(4000)))
		}
		return check(ctx)
	})
	if err != nil && p.Alive() {
		return fmt.Errorf("%s: %w; last output:\n%s", p.Name, err, p.Logs(4000))
	}
	return err
}

// FreePort asks the kernel for a free TCP port on the loopback address.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func freePorts(n int) ([]int, error) {
	// Hold every listener until all are chosen so the kernel never hands out
	// the same port twice.
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitPortFree waits until the loopback port can be bound again.
func waitPortFree(port int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		l, err := net.Listen("tcp", hostPort(port))
		if err == nil {
			_ = l.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

var errNotYet = errors.New("not yet")
