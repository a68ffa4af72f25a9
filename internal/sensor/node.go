// Package sensor is the node agent (`bulkhead sensor`): it maps the kernel's
// per-container observations to this node's pods, learns and scores them with
// the same behavior model the manager and `bulkhead eval` use, sends scores
// (not raw events) and heartbeats to the manager, and enforces isolation of
// quarantined pods in the kernel.
//
// The kernel collector, the cgroup reader and the kernel enforcer live in
// their own packages; this package reaches them through the small interfaces
// below, over its own plain types, so it is tested without a kernel.
package sensor

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// Trigram is three consecutive system call numbers of one container.
type Trigram [3]uint16

// Event is one observation of a tracked container's cgroup: exactly one of
// Exec and Conn is set.
type Event struct {
	CgroupID uint64
	Time     time.Time
	Exec     *Exec
	Conn     *Conn
}

// Exec is a process execution.
type Exec struct {
	PID, PPID, UID uint32
	Binary, Parent string
	Args           []string
}

// Conn is an outbound connection, or a listening socket when Listen.
type Conn struct {
	PID      uint32
	Family   int
	Addr     netip.Addr
	Port     uint16
	Protocol string // TCP, UDP
	Listen   bool
}

// UnavailableError says the collector cannot run on this kernel and what is
// missing (BTF, a program type, a refused attach).
type UnavailableError struct {
	Missing string
	Err     error
}

func (e *UnavailableError) Error() string {
	if e.Err == nil {
		return "behaviour collection unavailable: " + e.Missing
	}
	return fmt.Sprintf("behaviour collection unavailable: %s: %v", e.Missing, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// Collector is the kernel collector of the tracked containers' behaviour.
type Collector interface {
	// Track and Untrack start and stop observing a cgroup (by its id).
	Track(cgroupID uint64) error
	Untrack(cgroupID uint64) error
	// Sockets are the TCP connections and listeners a tracked cgroup (at
	// cgroupPath) already has open: Run reports only later ones.
	Sockets(cgroupID uint64, cgroupPath string) ([]Event, error)
	// Run sends execs and connections to out until ctx ends or it fails.
	Run(ctx context.Context, out chan<- Event) error
	// DrainSyscalls returns and resets the system-call trigram counts per cgroup.
	DrainSyscalls() (map[uint64]map[Trigram]uint64, error)
	// SyscallDuty is the system-call collection's duty cycle: under heavy
	// system-call load it is attached only part of the time.
	SyscallDuty() SyscallDuty
	Close() error
}

// SyscallDuty is how much of the time system calls are collected.
type SyscallDuty struct {
	// Ratio is the fraction of time the system-call program is attached
	// (1: always; execs, connections and resources are always collected).
	Ratio float64
	// Rate is the host's system calls per second while it was attached.
	Rate float64
}

// Container is one container's cgroup as found under the cgroup root.
type Container struct {
	PodUID, ContainerID, Runtime, QoS string
	// Path is relative to the cgroup root.
	Path string
	// ID is the cgroup id (its inode number); a recreated cgroup at the same
	// path has a new one.
	ID uint64
}

// Usage is a cgroup's cumulative resource counters, opaque to this package.
type Usage any

// ContainerSource finds containers' cgroups and reads their resource usage.
type ContainerSource interface {
	Scan(root string) ([]Container, error)
	// PodCgroups finds the pod-level cgroups (what enforcement attaches
	// to) of all pods in one walk: pod UID → path relative to root.
	PodCgroups(root string) (map[string]string, error)
	ReadUsage(root, rel string) (Usage, error)
	// Rate turns two readings of one cgroup into per-second rates.
	Rate(prev, cur Usage) detector.ResourceSample
}

// IsolateOptions say what isolation lets through.
type IsolateOptions struct {
	AllowDNS bool
	DNS      []netip.AddrPort
}

// IsolateResult is what the kernel enforcement did.
type IsolateResult struct {
	CgroupID         uint64
	Programs         []string
	SocketsDestroyed int
	ConnCut          bool
	Method, Reason   string
}

// Enforcer isolates pod cgroups in the kernel. Isolate must be idempotent:
// the agent calls it again for an isolated pod when the DNS endpoints change
// and after Reconcile, to learn the result.
type Enforcer interface {
	Isolate(cgroupPath string, o IsolateOptions) (IsolateResult, error)
	// Attach is Isolate's first part: the pod's packets are dropped once it
	// returns; Isolate then cuts its sockets and completes the isolation.
	Attach(cgroupPath string, o IsolateOptions) (IsolateResult, error)
	Release(cgroupPath string) error
	// Reconcile makes the kernel hold exactly want (by cgroup path).
	Reconcile(want map[string]IsolateOptions) (applied, released []string, err error)
	Close() error
}
