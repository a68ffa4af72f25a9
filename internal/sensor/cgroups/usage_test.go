package cgroups

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// TestReadUsageControllers reads a cgroup directory laid out as on a host
// with the memory, io and pids controllers enabled (a copy: a test cannot
// enable them on a hybrid host's v2 tree, where they are bound to v1).
func TestReadUsageControllers(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
	write("cgroup.procs", "1\n2\n3\n")
	u, err := ReadUsage(root, "a/b")
	if err != nil {
		t.Fatal(err)
	}
	if u.CPUUsec != 1500 || u.MemoryKnown || u.Pids != 3 || u.IOReadBytes != 0 {
		t.Fatalf("without controllers: %+v", u)
	}
	write("memory.current", "4096\n")
	write("io.stat", "8:0 rbytes=100 wbytes=20 rios=1 wios=1 dbytes=0 dios=0\n259:0 rbytes=5 wbytes=7 rios=1 wios=1\n")
	write("pids.current", "7\n")
	u, err = ReadUsage(root, "/a/b")
	if err != nil {
		t.Fatal(err)
	}
	want := Usage{Time: u.Time, CPUUsec: 1500, MemoryBytes: 4096, MemoryKnown: true, IOReadBytes: 105, IOWriteBytes: 27, Pids: 7}
	if u != want {
		t.Fatalf("with controllers: %+v, want %+v", u, want)
	}
	write("memory.current", "lots\n")
	if _, err := ReadUsage(root, "a/b"); err == nil {
		t.Error("a malformed memory.current was accepted")
	}
	write("memory.current", "1\n")
	write("cpu.stat", "user_usec 1\n")
	if _, err := ReadUsage(root, "a/b"); err == nil {
		t.Error("a cpu.stat without usage_usec was accepted")
	}
}

func TestRate(t *testing.T) {
	t0 := time.Unix(100, 0)
	for _, tc := range []struct {
		name      string
		prev, cur Usage
		want      detector.ResourceSample
	}{
		{"one core for 2s",
			Usage{Time: t0, CPUUsec: 1_000_000, IOReadBytes: 10, IOWriteBytes: 0},
			Usage{Time: t0.Add(2 * time.Second), CPUUsec: 3_000_000, IOReadBytes: 410, IOWriteBytes: 200, MemoryBytes: 5, MemoryKnown: true},
			detector.ResourceSample{CPUMillicores: 1000, DiskReadBytes: 200, DiskWrittenBytes: 100, MemoryBytes: 5}},
		{"counter reset: a reused cgroup counts from zero",
			Usage{Time: t0, CPUUsec: 9_000_000, IOReadBytes: 1000},
			Usage{Time: t0.Add(time.Second), CPUUsec: 250_000, IOReadBytes: 10},
			detector.ResourceSample{CPUMillicores: 250, DiskReadBytes: 10}},
		{"memory unknown is zero",
			Usage{Time: t0},
			Usage{Time: t0.Add(time.Second), MemoryBytes: 99},
			detector.ResourceSample{}},
		{"no interval: no rates",
			Usage{Time: t0, CPUUsec: 0},
			Usage{Time: t0, CPUUsec: 1000, MemoryBytes: 3, MemoryKnown: true},
			detector.ResourceSample{MemoryBytes: 3}},
		{"clock went backwards: no rates",
			Usage{Time: t0.Add(time.Second)},
			Usage{Time: t0, CPUUsec: 1000},
			detector.ResourceSample{}},
	} {
		if got := Rate(tc.prev, tc.cur); got != tc.want {
			t.Errorf("%s: Rate = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
