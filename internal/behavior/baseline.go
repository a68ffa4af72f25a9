package behavior

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// Key identifies a workload baseline: a rollout (new pod-template hash) gets
// a new one.
type Key struct {
	Namespace    string
	Owner        string // Kind/name of the controlling workload, or Pod/name
	TemplateHash string // pod-template-hash or controller-revision-hash
}

func (k Key) String() string { return k.Namespace + "/" + k.Owner + "@" + k.TemplateHash }

// Config sizes the models; zero fields take the defaults.
type Config struct {
	LearningWindow time.Duration // default 24h
	SeqN           int           // longest syscall n-gram, default 8
	// SeqBits is the syscall n-gram filter size, default 256 Kbit (32 KiB in
	// memory). It is what the stored form can usually keep whole (see
	// MarshalBinary), so the calibration learned with it holds for the
	// stored, shared baseline; on ADFA-LD it scores the AUC of 1 Mbit.
	SeqBits     int
	SetCap      int // exec/network items kept per kind, default 2048
	ResourceCap int // resource samples kept, default 512
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.LearningWindow <= 0 {
		c.LearningWindow = 24 * time.Hour
	}
	def(&c.SeqN, 8)
	def(&c.SeqBits, 1<<18)
	def(&c.SetCap, 2048)
	def(&c.ResourceCap, 512)
	return c
}

// Baseline is what one workload revision normally does.
type Baseline struct {
	Key      Key
	Started  time.Time
	Window   time.Duration
	Events   uint64
	Syscalls *Seq
	ExecSeq  *Seq // order of exec'd binaries
	Exec     *Exec
	Net      *Net
	Res      *Resource
	// SysNormal holds the syscall scores of the latest learning batches,
	// each scored before it was learned (prequential): the workload's own
	// novelty level, used to calibrate scores. A ring of recentBatches.
	SysNormal []float64
	SysNext   int
	q         float64 // cached 95th percentile of SysNormal; 0 = stale
}

// recentBatches is how many learning batches calibrate the syscall score.
const recentBatches = 256

// NewBaseline starts learning at now.
func NewBaseline(k Key, cfg Config, now time.Time) *Baseline {
	cfg = cfg.withDefaults()
	return &Baseline{
		Key: k, Started: now, Window: cfg.LearningWindow,
		Syscalls: NewSeq(cfg.SeqN, cfg.SeqBits),
		ExecSeq:  NewSeq(3, 16*cfg.SetCap),
		Exec:     NewExec(cfg.SetCap),
		Net:      NewNet(cfg.SetCap),
		Res:      NewResource(cfg.ResourceCap),
	}
}

// Learning reports whether the learning window is still open at now.
func (b *Baseline) Learning(now time.Time) bool { return now.Before(b.Started.Add(b.Window)) }

// Stream is the per-container sequence state against one baseline.
type Stream struct {
	Syscalls, Execs History
}

// Learn adds one event to the baseline.
func (b *Baseline) Learn(ev *detector.BehaviorEvent, st *Stream, rng *rand.Rand) {
	b.Events++
	switch {
	case len(ev.Syscalls) > 0:
		h := History{ids: slices.Clone(st.Syscalls.ids)}
		raw, _ := b.Syscalls.Score(&h, ev.Syscalls)
		if len(b.SysNormal) < recentBatches {
			b.SysNormal = append(b.SysNormal, raw)
		} else {
			b.SysNormal[b.SysNext] = raw
			b.SysNext = (b.SysNext + 1) % recentBatches
		}
		b.q = 0
		b.Syscalls.Learn(&st.Syscalls, ev.Syscalls)
	case ev.Exec != nil:
		b.Exec.Learn(ev.Exec)
		b.ExecSeq.Learn(&st.Execs, []string{ev.Exec.Binary})
	case ev.Connect != nil:
		b.Net.Learn(ev.Connect)
	case ev.Metrics != nil:
		b.Res.Learn(ev.Metrics, rng)
	}
}

// Component names in scores and evidence.
const (
	CompSyscalls = "syscalls"
	CompExec     = "exec"
	CompNetwork  = "network"
	CompResource = "resources"
)

// Finding is one component's score for a batch, with what made it anomalous.
type Finding struct {
	Component string  `json:"component"`
	Score     float64 `json:"score"`
	// Raw is the uncalibrated score (syscalls: the mean event score).
	Raw    float64  `json:"raw"`
	Reason string   `json:"reason,omitempty"`
	Tokens []string `json:"tokens,omitempty"`
	Events int      `json:"events"`
}

// Score scores a batch of one pod's events against the baseline: syscalls
// by mean event score over the batch, the others by their worst event.
func (b *Baseline) Score(evs []detector.BehaviorEvent, streams func(container string) *Stream, rng *rand.Rand) []Finding {
	var (
		sys        Finding
		sysSum     float64
		novel      = map[string]float64{}
		exec, netw = Finding{Component: CompExec}, Finding{Component: CompNetwork}
		res        = Finding{Component: CompResource}
		// notable keeps the other novel events of a finding, so a reason
		// names every new binary or destination of the batch, not only
		// the worst (a download and exec: sh, curl and the payload).
		notable = map[*Finding][]string{}
		worst   = func(f *Finding, s float64, why string) {
			f.Events++
			if s >= 0.5 && why != "" && len(notable[f]) < 4 && !slices.Contains(notable[f], why) {
				notable[f] = append(notable[f], why)
			}
			if s > f.Score {
				f.Score, f.Reason = s, why
			}
		}
	)
	sys.Component = CompSyscalls
	for i := range evs {
		ev := &evs[i]
		st := streams(ev.Container)
		switch {
		case len(ev.Syscalls) > 0:
			for _, t := range ev.Syscalls {
				e := b.Syscalls.Event(&st.Syscalls, t)
				sysSum += e
				sys.Events++
				if e >= 0.5 && e > novel[t] {
					novel[t] = e
				}
			}
		case ev.Exec != nil:
			s, why := b.Exec.Score(ev.Exec)
			// A known binary at an unseen point of the exec order is weak evidence.
			if q := 0.4 * b.ExecSeq.Event(&st.Execs, ev.Exec.Binary); q > s {
				s, why = q, fmt.Sprintf("%s exec'd in an unseen order", ev.Exec.Binary)
			}
			worst(&exec, s, why)
		case ev.Connect != nil:
			s, why := b.Net.Score(ev.Connect)
			worst(&netw, s, why)
		case ev.Metrics != nil:
			s, why := b.Res.Score(ev.Metrics, rng)
			worst(&res, s, why)
		}
	}
	var out []Finding
	if sys.Events > 0 {
		sys.Raw = sysSum / float64(sys.Events)
		sys.Score = b.calibrate(sys.Raw)
		sys.Tokens = top(novel, 5)
		sys.Reason = fmt.Sprintf("%.0f%% of %d system calls outside learned sequences", 100*sys.Raw, sys.Events)
		out = append(out, sys)
	}
	for _, f := range []*Finding{&exec, &netw, &res} {
		if f.Events == 0 {
			continue
		}
		for _, why := range notable[f] {
			if why != f.Reason {
				f.Reason += "; " + why
			}
		}
		out = append(out, *f)
	}
	return out
}

// NormalLevel is the 95th percentile of the recent learning batches' syscall
// scores (0.5 when there were none), kept inside [0.02, 0.98].
func (b *Baseline) NormalLevel() float64 {
	if b.q == 0 {
		b.q = 0.5
		if len(b.SysNormal) > 0 {
			s := slices.Clone(b.SysNormal)
			slices.Sort(s)
			b.q = s[len(s)*95/100]
		}
		b.q = min(max(b.q, 0.02), 0.98)
	}
	return b.q
}

// calibrate maps a raw syscall score to [0,1] relative to the workload's own
// novelty at the end of learning, q = NormalLevel: linear from 0 to 0.5 up to
// q, then rising towards 1 (0.975 at raw 1). It is strictly increasing, so
// rankings (and ROC AUC) are unchanged, while a policy threshold means "this
// far beyond what this workload normally does".
func (b *Baseline) calibrate(raw float64) float64 {
	q := b.NormalLevel()
	if raw <= q {
		return 0.5 * raw / q
	}
	return 0.5 + 0.5*(1-math.Exp(-3*(raw-q)/(1-q)))
}

// Merge adds what o learned to b: the same workload revision learned on
// another node (or by another process), so that all its pods share one
// baseline. The n-gram filters and sets are unioned (at the smaller size of
// the two, see fold), the resource reservoirs combined in proportion to the
// samples each saw, the calibration scores pooled. The learning window is
// the earliest start with the longer window, and the event counts add up.
// o is not changed; on error b is not either.
func (b *Baseline) Merge(o *Baseline) error {
	if b.Key != o.Key {
		return fmt.Errorf("merging baseline %s into %s: different workloads", o.Key, b.Key)
	}
	for _, x := range []*Baseline{b, o} {
		if x.Syscalls == nil || x.ExecSeq == nil || x.Exec == nil || x.Net == nil || x.Res == nil {
			return fmt.Errorf("merging baseline %s: an incomplete baseline (not from NewBaseline or UnmarshalBinary)", b.Key)
		}
	}
	if b.Syscalls.N != o.Syscalls.N || b.ExecSeq.N != o.ExecSeq.N {
		return fmt.Errorf("merging baseline %s: n-gram lengths %d/%d and %d/%d differ", b.Key, b.Syscalls.N, b.ExecSeq.N, o.Syscalls.N, o.ExecSeq.N)
	}
	_ = b.Syscalls.merge(o.Syscalls) // N checked above
	_ = b.ExecSeq.merge(o.ExecSeq)
	mine, theirs := b.sets(), o.sets()
	for i := range mine {
		mine[i].merge(theirs[i])
	}
	b.Res.merge(o.Res)
	if o.Started.Before(b.Started) {
		b.Started = o.Started
	}
	b.Window = max(b.Window, o.Window)
	b.Events += o.Events
	// Pool the calibration scores; beyond the ring's size keep an even
	// share of each side.
	pool := append(ringOrder(b.SysNormal, b.SysNext), ringOrder(o.SysNormal, o.SysNext)...)
	if len(pool) > recentBatches {
		thinned := make([]float64, 0, recentBatches)
		for i := 0; i < recentBatches; i++ {
			thinned = append(thinned, pool[i*len(pool)/recentBatches])
		}
		pool = thinned
	}
	b.SysNormal, b.SysNext, b.q = pool, 0, 0 // oldest first, so a full ring overwrites from 0
	return nil
}

// ringOrder returns a ring's values oldest first.
func ringOrder(r []float64, next int) []float64 {
	if len(r) < recentBatches || next <= 0 || next >= len(r) {
		return slices.Clone(r)
	}
	return append(slices.Clone(r[next:]), r[:next]...)
}
