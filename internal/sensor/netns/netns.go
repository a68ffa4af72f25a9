// Package netns finds the network namespaces of a cgroup's processes and
// runs code inside them. Socket tables, BPF socket iterators and sock_diag
// see only the namespace they are used in, so the sensor enters each
// namespace of a pod (entering needs CAP_SYS_ADMIN).
package netns

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// NS is a network namespace held open, so it can be entered even after the
// process it was found through has exited.
type NS struct {
	Name string // /proc/<pid>/ns/net at the time it was opened
	f    *os.File
}

// Close closes every namespace of nss.
func Close(nss []NS) {
	for _, ns := range nss {
		ns.f.Close()
	}
}

// Self opens the calling process's own network namespace.
func Self() (NS, error) {
	const name = "/proc/self/ns/net"
	f, err := os.Open(name)
	if err != nil {
		return NS{}, err
	}
	return NS{Name: name, f: f}, nil
}

// OfCgroup opens the network namespace of one process per distinct
// namespace among the processes of the cgroup and its descendants; none when
// it has no processes. A process that exits meanwhile is skipped; a
// namespace already open stays enterable. The caller closes them (Close).
func OfCgroup(cgroupPath string) ([]NS, error) {
	seen := map[uint64]bool{}
	var out []NS
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
			if err != nil || pid <= 0 {
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
			out = append(out, NS{Name: name, f: nsf})
		}
		return nil
	})
	if err != nil {
		Close(out)
		return nil, err
	}
	return out, nil
}

// Run runs fn on a thread switched into the namespace, and switches the
// thread back afterwards.
func (ns NS) Run(fn func() error) error {
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
		return fmt.Errorf("enter network namespace %s (needs CAP_SYS_ADMIN): %w", ns.Name, err)
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
