package enforce

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// netnsPods starts n pods, each a cgroup with a process in its own network
// namespace holding a connection to itself.
func netnsPods(tb testing.TB, prefix string, n int) ([]string, []*helper) {
	tb.Helper()
	paths := make([]string, n)
	hs := make([]*helper, n)
	for i := range n {
		paths[i] = newCgroup(tb, fmt.Sprintf("%s-%d", prefix, i))
		hs[i] = startHelperFlags(tb, paths[i], unix.CLONE_NEWNET, "netns-pod")
	}
	for i, h := range hs {
		waitFor(tb, fmt.Sprintf("pod %d's connection", i), func() bool { _, ok := h.has("held-ok"); return ok })
		if l, ok := h.has("setup-error"); ok {
			tb.Fatal(l)
		}
	}
	return paths, hs
}

// inParallel runs f for every path on workers goroutines and returns the
// errors by path.
func inParallel(paths []string, workers int, f func(string) error) map[string]error {
	var (
		mu   sync.Mutex
		errs = map[string]error{}
		wg   sync.WaitGroup
		work = make(chan string)
	)
	for range workers {
		wg.Go(func() {
			for p := range work {
				if err := f(p); err != nil {
					mu.Lock()
					errs[p] = err
					mu.Unlock()
				}
			}
		})
	}
	for _, p := range paths {
		work <- p
	}
	close(work)
	wg.Wait()
	return errs
}

// Isolating many pods at once, as the sensor does in a burst, leaves
// exactly one complete, pinned isolation per pod (two links each, the
// programs really attached, every held connection cut), and releasing them
// at once leaves nothing.
func TestParallelIsolateAndRelease(t *testing.T) {
	pinDir := requireKernel(t)
	e := newEnforcer(t, pinDir)
	const n = 12
	paths, hs := netnsPods(t, "par", n)
	var mu sync.Mutex
	results := map[string]Result{}
	// Twice per pod, at once: the second call on a cgroup waits for the
	// first and finds it in place.
	errs := inParallel(append(slices.Clone(paths), paths...), 8, func(p string) error {
		res, err := e.Isolate(p, Options{})
		mu.Lock()
		defer mu.Unlock()
		if err == nil && res.SocketsDestroyed > 0 {
			results[p] = res
		}
		return err
	})
	if len(errs) > 0 {
		t.Fatalf("isolate: %v", errs)
	}
	isos, err := e.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(isos) != n {
		t.Fatalf("%d isolations pinned, want %d: %+v", len(isos), n, isos)
	}
	for _, iso := range isos {
		if !iso.Complete || !slices.Contains(paths, iso.Path) || len(iso.Programs) != len(programs) {
			t.Errorf("isolation %+v: want complete, with %d programs, of one of the pods", iso, len(programs))
		}
		if got := pinnedLinks(t, pinDir, iso.CgroupID); len(got) != len(programs) {
			t.Errorf("cgroup %d: %d links pinned, want %d", iso.CgroupID, len(got), len(programs))
		}
	}
	for i, p := range paths {
		if got := attached(t, p); len(got) != len(programs) {
			t.Errorf("%s: %d programs attached, want %d", p, len(got), len(programs))
		}
		if results[p].SocketsDestroyed < 2 || !results[p].ConnCut {
			t.Errorf("%s: %+v, want both ends of its connection destroyed", p, results[p])
		}
		waitFor(t, fmt.Sprintf("pod %d's held connection to fail", i), func() bool { _, ok := hs[i].has("held-error"); return ok })
	}

	if errs := inParallel(append(slices.Clone(paths), paths...), 8, e.Release); len(errs) > 0 {
		t.Fatalf("release: %v", errs)
	}
	if left := pins(t, pinDir); len(left) != 0 {
		t.Errorf("pins left after release: %v", left)
	}
	for _, p := range paths {
		if got := attached(t, p); len(got) != 0 {
			t.Errorf("%s: programs %v still attached after release", p, got)
		}
	}
}

// Close waits for the calls in flight and refuses later ones.
func TestCloseRefusesLaterCalls(t *testing.T) {
	pinDir := requireKernel(t)
	e := newEnforcer(t, pinDir)
	pod := newCgroup(t, "closed")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Isolate(pod, Options{}); err == nil {
		t.Fatal("Isolate after Close succeeded")
	}
	if _, err := os.Stat(filepath.Join(pinDir, fmt.Sprint(mustID(t, pod)))); err == nil {
		t.Error("Isolate after Close left a pin directory")
	}
}

func mustID(tb testing.TB, path string) uint64 {
	tb.Helper()
	id, err := cgroupID(path)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// BenchmarkIsolateBurst measures a sensor's burst: -burst pods, each in its
// own network namespace with a held connection, isolated at once on
// -workers goroutines (1 is the old one-after-another). It reports the
// wall time of the whole burst and the latency of each Isolate.
func BenchmarkIsolateBurst(b *testing.B) {
	pinDir := requireKernel(b)
	e := newEnforcer(b, pinDir)
	const burst = 32
	paths, _ := netnsPods(b, "burst", burst)
	for _, workers := range []int{1, 4, 8} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			var walls, each []time.Duration
			var mu sync.Mutex
			for b.Loop() {
				b.StopTimer()
				if errs := inParallel(paths, 8, e.Release); len(errs) > 0 {
					b.Fatal(errs)
				}
				b.StartTimer()
				start := time.Now()
				errs := inParallel(paths, workers, func(p string) error {
					t0 := time.Now()
					_, err := e.Isolate(p, Options{})
					mu.Lock()
					each = append(each, time.Since(t0))
					mu.Unlock()
					return err
				})
				walls = append(walls, time.Since(start))
				if len(errs) > 0 {
					b.Fatal(errs)
				}
			}
			b.StopTimer()
			slices.Sort(walls)
			slices.Sort(each)
			b.ReportMetric(float64(walls[len(walls)/2].Microseconds())/1000, "burst-p50-ms")
			b.ReportMetric(float64(each[len(each)/2].Microseconds())/1000, "isolate-p50-ms")
			b.ReportMetric(float64(each[len(each)*99/100].Microseconds())/1000, "isolate-p99-ms")
		})
	}
	if errs := inParallel(paths, 8, e.Release); len(errs) > 0 {
		b.Fatal(errs)
	}
}

// Attach alone drops the pod's packets (new connections, datagrams; DNS
// still passes) but cuts nothing and leaves the isolation incomplete, so a
// crash before Isolate finishes it is seen by Reconcile; Isolate then cuts
// the held connection and completes it.
func TestAttachThenIsolate(t *testing.T) {
	env := setup(t)
	e := env.e
	res, err := e.Attach(env.pod, env.opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.ConnCut || res.SocketsDestroyed != 0 || len(res.Programs) != len(programs) {
		t.Errorf("Attach = %+v: want the programs attached and no socket cut", res)
	}
	env.blocked(t)
	if _, ok := env.podC.has("held-error"); ok {
		t.Error("Attach cut the held connection")
	}
	isos, err := e.List()
	if err != nil || len(isos) != 1 || isos[0].Complete || len(isos[0].Programs) != len(programs) {
		t.Fatalf("List after Attach = %+v, %v: want one incomplete isolation with its programs", isos, err)
	}
	res, err = e.Isolate(env.pod, env.opts)
	if err != nil {
		t.Fatal(err)
	}
	if !res.ConnCut || res.SocketsDestroyed < 1 {
		t.Errorf("Isolate after Attach = %+v: want the held connection cut", res)
	}
	waitFor(t, "the pod's held connection to fail", func() bool { _, ok := env.podC.has("held-error"); return ok })
	if isos, err := e.List(); err != nil || len(isos) != 1 || !isos[0].Complete {
		t.Errorf("List after Isolate = %+v, %v: want it complete", isos, err)
	}
	env.flowing(t, "sibling", false)
	if err := e.Release(env.pod); err != nil {
		t.Fatal(err)
	}
	if p := pins(t, env.pinDir); len(p) != 0 {
		t.Errorf("pins left after Release: %v", p)
	}
}
