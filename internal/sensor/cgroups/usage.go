package cgroups

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// Usage is a reading of a cgroup's cumulative counters and gauges.
type Usage struct {
	Time         time.Time
	CPUUsec      uint64 // cpu.stat usage_usec (cumulative)
	MemoryBytes  uint64 // memory.current (gauge)
	MemoryKnown  bool   // false where the memory controller is not enabled (a hybrid host's v2 tree)
	IOReadBytes  uint64 // io.stat rbytes over all devices (cumulative; 0 without the io controller)
	IOWriteBytes uint64 // io.stat wbytes
	Pids         uint64 // pids.current, or the number of processes in cgroup.procs without the pids controller
}

// ReadUsage reads the usage of the cgroup at rel below root. cpu.stat is
// always present in cgroup v2, so its absence means the cgroup is gone
// (the error wraps fs.ErrNotExist); the other files depend on which
// controllers the parent enables and are optional.
func ReadUsage(root, rel string) (Usage, error) {
	rel, err := clean(rel)
	if err != nil {
		return Usage{}, err
	}
	dir := filepath.Join(root, filepath.FromSlash(rel))
	u := Usage{Time: time.Now()}
	cpu, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return Usage{}, fmt.Errorf("reading cgroup %s: %w", rel, err)
	}
	if u.CPUUsec, err = field(cpu, "usage_usec"); err != nil {
		return Usage{}, fmt.Errorf("cgroup %s cpu.stat: %w", rel, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "memory.current")); err == nil {
		if u.MemoryBytes, err = strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64); err != nil {
			return Usage{}, fmt.Errorf("cgroup %s memory.current: %w", rel, err)
		}
		u.MemoryKnown = true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Usage{}, fmt.Errorf("reading cgroup %s: %w", rel, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "io.stat")); err == nil {
		u.IOReadBytes, u.IOWriteBytes = ioBytes(b)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Usage{}, fmt.Errorf("reading cgroup %s: %w", rel, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "pids.current")); err == nil {
		if u.Pids, err = strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64); err != nil {
			return Usage{}, fmt.Errorf("cgroup %s pids.current: %w", rel, err)
		}
	} else if errors.Is(err, fs.ErrNotExist) {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			return Usage{}, fmt.Errorf("reading cgroup %s: %w", rel, err)
		}
		u.Pids = uint64(bytes.Count(b, []byte{'\n'}))
	} else {
		return Usage{}, fmt.Errorf("reading cgroup %s: %w", rel, err)
	}
	return u, nil
}

// field finds "key value" in a flat-keyed file.
func field(b []byte, key string) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := bytes.Cut(sc.Bytes(), []byte{' '})
		if ok && string(k) == key {
			return strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s", key)
}

// ioBytes sums rbytes and wbytes over the devices of io.stat
// ("8:0 rbytes=1 wbytes=2 rios=3 ..."); malformed fields are skipped.
func ioBytes(b []byte) (r, w uint64) {
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		for _, f := range bytes.Fields(line) {
			k, v, ok := bytes.Cut(f, []byte{'='})
			if !ok {
				continue
			}
			n, err := strconv.ParseUint(string(v), 10, 64)
			if err != nil {
				continue
			}
			switch string(k) {
			case "rbytes":
				r += n
			case "wbytes":
				w += n
			}
		}
	}
	return r, w
}

// Rate turns two readings of one cgroup into the behavior model's resource
// sample: CPU in millicores and I/O in bytes per second over the interval,
// memory as the latest level. A counter that went backwards (the path was
// reused by a new cgroup) counts from zero, so no rate is ever negative; a
// non-positive interval gives no rates.
func Rate(prev, cur Usage) detector.ResourceSample {
	s := detector.ResourceSample{}
	if cur.MemoryKnown {
		s.MemoryBytes = float64(cur.MemoryBytes)
	}
	dt := cur.Time.Sub(prev.Time).Seconds()
	if dt <= 0 {
		return s
	}
	delta := func(p, c uint64) float64 {
		if c < p {
			return float64(c) // reset: all of c accrued since
		}
		return float64(c - p)
	}
	s.CPUMillicores = delta(prev.CPUUsec, cur.CPUUsec) / 1000 / dt
	s.DiskReadBytes = delta(prev.IOReadBytes, cur.IOReadBytes) / dt
	s.DiskWrittenBytes = delta(prev.IOWriteBytes, cur.IOWriteBytes) / dt
	return s
}
