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
)

// Process is one component of the cluster (or the manager) running as a
// child process, its output in LogPath.
type Process struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

// startProcess runs bin with args, output to dir/<name>.log. The child gets
// its own process group, so a Ctrl-C reaches only the launcher, which then
// stops everything in order; and it is killed if the launcher dies.
func startProcess(dir, name, bin string, args []string, env []string) (*Process, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	return p, nil
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
	if exited, _ := p.Exited(); exited {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
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
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("%s exited (%v) before %s; last output:\n%s", p.Name, err, what, p.Logs(4000))
		}
		if last = check(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: timed out after %s waiting for %s: %w; last output:\n%s", p.Name, timeout, what, last, p.Logs(4000))
		case <-time.After(100 * time.Millisecond):
		}
	}
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

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

var errNotYet = errors.New("not yet")
