package main

import (
	"context"
	"errors"

	"github.com/bulkhead-dev/bulkhead/internal/sensor"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/collect"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/enforce"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/kernel"
)

// sensorBackends connects the node agent to the kernel: the eBPF collector,
// the cgroup reader and the enforcer (package kernel).
func sensorBackends(cgroupRoot, pinDir string, syscallBudget float64) (sensor.Backends, func()) {
	be := sensor.Backends{
		NewCollector: func() (sensor.Collector, error) {
			c, err := collect.New(collect.Options{Duty: collect.DutyConfig{Budget: syscallBudget}})
			if err != nil {
				var ue *collect.UnavailableError
				if errors.As(err, &ue) {
					return nil, &sensor.UnavailableError{Missing: ue.Missing, Err: ue.Err}
				}
				return nil, err
			}
			return collector{c}, nil
		},
		SyscallName: collect.SyscallName,
		MaxSyscall:  collect.MaxSyscall,
		Containers:  kernel.Containers{},
	}
	closeFn := func() {}
	e, err := enforce.New(pinDir)
	if err != nil {
		be.EnforcerErr = err
	} else {
		be.Enforcer = kernel.Enforcer{E: e, Root: cgroupRoot}
		// Close keeps the pins: isolated pods stay isolated across restarts.
		closeFn = func() { _ = e.Close() }
	}
	return be, closeFn
}

type collector struct{ c *collect.Collector }

func (c collector) Track(id uint64) error   { return c.c.Track(id) }
func (c collector) Untrack(id uint64) error { return c.c.Untrack(id) }
func (c collector) Close() error            { return c.c.Close() }

func (c collector) SyscallDuty() sensor.SyscallDuty {
	d := c.c.SyscallDuty()
	return sensor.SyscallDuty{Ratio: d.Ratio, Rate: d.Rate}
}

func (c collector) Sockets(id uint64, path string) ([]sensor.Event, error) {
	evs, err := c.c.Sockets(id, path)
	out := make([]sensor.Event, 0, len(evs))
	for _, ev := range evs {
		if ev.Conn != nil {
			conn := sensor.Conn(*ev.Conn)
			out = append(out, sensor.Event{CgroupID: ev.CgroupID, Time: ev.Time, Conn: &conn})
		}
	}
	return out, err
}

// Run relays the collector's events in the agent's form.
func (c collector) Run(ctx context.Context, out chan<- sensor.Event) error {
	in := make(chan collect.Event, 256)
	done := make(chan error, 1)
	go func() { done <- c.c.Run(ctx, in); close(in) }()
	for ev := range in {
		se := sensor.Event{CgroupID: ev.CgroupID, Time: ev.Time}
		if x := ev.Exec; x != nil {
			parent := x.ParentExe
			if parent == "" {
				parent = x.Parent
			}
			se.Exec = &sensor.Exec{PID: x.PID, PPID: x.PPID, UID: x.UID, Binary: x.Binary, Parent: parent, Args: x.Args}
		}
		if x := ev.Conn; x != nil {
			conn := sensor.Conn(*x)
			se.Conn = &conn
		}
		select {
		case out <- se:
		case <-ctx.Done():
		}
	}
	return <-done
}

func (c collector) DrainSyscalls() (map[uint64]map[sensor.Trigram]uint64, error) {
	in, err := c.c.DrainSyscalls()
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]map[sensor.Trigram]uint64, len(in))
	for id, grams := range in {
		m := make(map[sensor.Trigram]uint64, len(grams))
		for g, n := range grams {
			m[sensor.Trigram(g)] = n
		}
		out[id] = m
	}
	return out, nil
}
