package collect

import (
	"math"
	"testing"
	"time"
)

func TestDutyTable(t *testing.T) {
	// 2 CPUs; every call costs 100 ns, a tracked one 100 more: 1e7 calls/s
	// cost 1 s of CPU per s, half the host.
	cfg := DutyConfig{Budget: 2, Period: 2 * time.Second, Tick: time.Second, MinDuty: 0.05, HookNs: 60, ProgramNs: 40, TrackedNs: 100, CPUs: 2}
	sec := func(all, tracked uint64) CallSample {
		return CallSample{Window: time.Second, All: all, Tracked: tracked}
	}
	for _, tc := range []struct {
		name     string
		cfg      DutyConfig
		s        CallSample
		cost     float64 // fraction of the host's CPU
		duty     float64
		on, off  time.Duration
		noBudget bool
	}{
		{name: "idle host", cfg: cfg, s: sec(20_000, 1_000), cost: (20_000*100 + 1_000*100) / 2e9, duty: 1, on: time.Second},
		{name: "just at the budget", cfg: cfg, s: sec(400_000, 0), cost: 0.02, duty: 1, on: time.Second},
		{name: "twice the budget", cfg: cfg, s: sec(800_000, 0), cost: 0.04, duty: 0.5, on: time.Second, off: time.Second},
		{name: "tracked calls cost more", cfg: cfg, s: sec(400_000, 400_000), cost: 0.04, duty: 0.5, on: time.Second, off: time.Second},
		{name: "a half-second window", cfg: cfg, s: CallSample{Window: time.Second / 2, All: 400_000}, cost: 0.04, duty: 0.5, on: time.Second, off: time.Second},
		{name: "measured program time replaces the constants", cfg: cfg,
			s:    CallSample{Window: time.Second, All: 400_000, Tracked: 400_000, ProgramTime: 24 * time.Millisecond},
			cost: (400_000*60 + 24e6) / 2e9, duty: 2.0 / 2.4, on: 1666666666},
		{name: "overload is held at MinDuty", cfg: cfg, s: sec(1e8, 0), cost: 5, duty: 0.05, on: 100 * time.Millisecond, off: 1900 * time.Millisecond},
		{name: "no budget: always attached", cfg: DutyConfig{Budget: 0, HookNs: 60, ProgramNs: 40, TrackedNs: 100, CPUs: 2, Tick: time.Second}, s: sec(1e8, 0), cost: 5, duty: 1, on: time.Second},
		{name: "empty window", cfg: cfg, s: CallSample{}, cost: 0, duty: 1, on: time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.cfg.Cost(tc.s); math.Abs(got-tc.cost) > 1e-9 {
				t.Errorf("Cost = %v, want %v", got, tc.cost)
			}
			duty := tc.cfg.Duty(tc.s)
			if math.Abs(duty-tc.duty) > 1e-9 {
				t.Errorf("Duty = %v, want %v", duty, tc.duty)
			}
			on, off := tc.cfg.Windows(duty)
			if d := on - tc.on; d < -time.Microsecond || d > time.Microsecond {
				t.Errorf("on window %v, want %v", on, tc.on)
			}
			if tc.off != 0 || duty < 1 {
				if want := tc.cfg.Period - tc.on; tc.off == 0 && off != want {
					t.Errorf("off window %v, want %v", off, want)
				} else if tc.off != 0 && (off-tc.off < -time.Microsecond || off-tc.off > time.Microsecond) {
					t.Errorf("off window %v, want %v", off, tc.off)
				}
			} else if off != 0 {
				t.Errorf("off window %v at duty 1, want none", off)
			}
		})
	}
}

func TestDutyConfigDefaultsAndBadInput(t *testing.T) {
	d, err := DutyConfig{Budget: 1}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if d.Period != 2*time.Second || d.Tick != time.Second || d.MinDuty != 0.05 || d.HookNs != defaultHookNs ||
		d.ProgramNs != defaultProgramNs || d.TrackedNs != defaultTrackedNs || d.CPUs < 1 {
		t.Errorf("defaults %+v", d)
	}
	for _, bad := range []DutyConfig{
		{Budget: -1}, {Budget: 101}, {Budget: math.NaN()}, {Budget: math.Inf(1)},
		{Period: -time.Second}, {Tick: -1}, {MinDuty: 1.5}, {MinDuty: -0.1}, {HookNs: -1}, {CPUs: -2},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
		if _, err := New(Options{Duty: bad}); err == nil {
			t.Errorf("New accepted duty config %+v", bad)
		}
	}
}

func TestPickConditions(t *testing.T) {
	known := []string{"off", "tracked", "duty", "hook-only"}
	for _, tc := range []struct {
		spec string
		want []string // nil: an error
	}{
		{"", known},
		{"  ", known},
		{"duty", []string{"off", "duty"}},
		{" tracked , duty ", []string{"off", "tracked", "duty"}},
		{"off,duty,duty", []string{"off", "duty"}},
		{"duty,,tracked", nil},
		{"dutty", nil},
		{"duty;tracked", nil},
	} {
		got, err := pickConditions(known, tc.spec)
		if tc.want == nil {
			if err == nil {
				t.Errorf("%q: accepted (%v)", tc.spec, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.spec, err)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("%q: %v, want %v", tc.spec, got, tc.want)
		}
		for _, n := range tc.want {
			if !got[n] {
				t.Errorf("%q: %v, want %v", tc.spec, got, tc.want)
			}
		}
	}
}
