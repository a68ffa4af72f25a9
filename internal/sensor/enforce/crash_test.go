package enforce

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// isolateSteps and releaseSteps are the points where Isolate and Release
// call the crash hook, in order.
func isolateSteps() []string {
	steps := []string{"mkdir", "intent", "maps"}
	for _, p := range programs {
		steps = append(steps, "attach "+p.section, "pin "+p.section)
	}
	return append(steps, "attached", "cut")
}

func releaseSteps() []string {
	var steps []string
	for _, p := range programs {
		steps = append(steps, "unpin "+p.section)
	}
	return append(steps, "unpin allow", "unpin counters", "unpin meta")
}

// TestCrashSafety SIGKILLs a sensor process at every step of Isolate and
// Release and at random moments, then checks that a fresh Enforcer's
// Reconcile leaves the kernel exactly as wanted: the pod's cgroup has the
// pinned programs attached and nothing else when it is wanted, and nothing
// attached and nothing pinned when it is not.
func TestCrashSafety(t *testing.T) {
	pinDir := requireKernel(t)
	newEnforcer(t, pinDir)
	pod := newCgroup(t, "crash")
	dns := netip.MustParseAddrPort("127.0.0.1:53")
	opts := Options{AllowDNS: true, DNS: []netip.AddrPort{dns}}
	env := []string{"PINDIR=" + pinDir, "CGROUP=" + pod, "DNS=" + dns.String()}

	// run starts a sensor for role and waits until it exits; killAfter > 0
	// kills it that long after it is ready to act instead of a hook.
	run := func(t *testing.T, role, crashAt string, killAfter time.Duration) bool {
		h := startHelper(t, "", role, append(env, "CRASH_AT="+crashAt)...)
		if killAfter > 0 {
			waitFor(t, "the sensor to start", func() bool { _, ok := h.has("ready"); return ok })
			time.Sleep(killAfter)
			_ = h.cmd.Process.Kill()
		}
		<-h.done
		if l, ok := h.has("error"); ok {
			t.Fatalf("sensor %s: %s", role, l)
		}
		_, finished := h.has("done")
		return finished
	}

	// reconcile restarts the sensor (a fresh Enforcer on the pins) and
	// reconciles to want, then checks the kernel against it.
	reconcile := func(t *testing.T, want bool) {
		e := newEnforcer(t, pinDir)
		w := map[string]Options{}
		if want {
			w[pod] = opts
		}
		if _, _, err := e.Reconcile(w); err != nil {
			t.Fatalf("Reconcile: %v", err)
		}
		cgid, err := cgroupID(pod)
		if err != nil {
			t.Fatal(err)
		}
		// Links that a killed process attached but never pinned are freed
		// by the kernel shortly after its exit, so the state is polled.
		waitFor(t, fmt.Sprintf("kernel state isolated=%v", want), func() bool {
			ids := attached(t, pod)
			if !want {
				return len(ids) == 0 && len(pins(t, pinDir)) == 0
			}
			pinned := pinnedLinks(t, pinDir, cgid)
			slices.Sort(ids)
			slices.Sort(pinned)
			return len(ids) == len(programs) && slices.Equal(ids, pinned)
		})
		if want {
			isos, err := e.List()
			if err != nil || len(isos) != 1 || !isos[0].Complete || isos[0].Path != pod {
				t.Fatalf("List = %+v, %v; want one complete isolation", isos, err)
			}
		}
		e.Close()
	}

	i := 0
	for _, phase := range []struct {
		role     string
		isolated bool // before the sensor runs
		steps    []string
	}{{"isolate", false, isolateSteps()}, {"release", true, releaseSteps()}} {
		for _, step := range phase.steps {
			want := i%2 == 1
			i++
			t.Run(fmt.Sprintf("%s killed at %s want=%v", phase.role, step, want), func(t *testing.T) {
				reconcile(t, phase.isolated)
				if run(t, phase.role, step, 0) {
					t.Fatalf("sensor finished: the crash hook at %q was never reached", step)
				}
				reconcile(t, want)
			})
		}
	}
	for n := range 10 {
		want := n%2 == 1
		role := "isolate"
		if n%4 >= 2 {
			role = "release"
		}
		delay := time.Duration(1+rand.IntN(8000)) * time.Microsecond
		t.Run(fmt.Sprintf("%s killed after %v want=%v", role, delay, want), func(t *testing.T) {
			reconcile(t, role == "release")
			finished := run(t, role, "", delay)
			t.Logf("sensor finished before the kill: %v", finished)
			reconcile(t, want)
		})
	}
}
