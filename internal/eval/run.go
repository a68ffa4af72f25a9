// Package eval trains and scores the behavior model on intrusion-detection
// data sets (ADFA-LD and LID-DS 2021 layouts) and reports ROC AUC, detection
// rates at fixed false-alarm rates and, for recordings, time to first alarm.
package eval

import (
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/behavior"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// Result is the score of one group of attack traces against all normal ones.
type Result struct {
	Family string  `json:"family"`
	Traces int     `json:"traces"`
	AUC    float64 `json:"auc"`
	DR1    float64 `json:"dr_at_1pct_far"`
	DR5    float64 `json:"dr_at_5pct_far"`
}

// Report is the outcome of an ADFA-LD-layout evaluation.
type Report struct {
	Dataset      string  `json:"dataset"`
	Model        string  `json:"model"`
	TrainTraces  int     `json:"train_traces"`
	NormalTraces int     `json:"normal_traces"`
	AttackTraces int     `json:"attack_traces"`
	Syscalls     int     `json:"scored_syscalls"`
	NsPerSyscall float64 `json:"ns_per_syscall_scoring"`
	// BaselineBytes is the stored size of the trained baseline; the scores
	// are those of the stored baseline (what sensors and the manager load),
	// InMemoryAUC that of the one training left in memory.
	BaselineBytes int                `json:"baseline_bytes"`
	InMemoryAUC   float64            `json:"auc_in_memory"`
	Overall       Result             `json:"overall"`
	Families      []Result           `json:"families"`
	ROC           []ROCPoint         `json:"roc"`
	Thresholds    map[string]float64 `json:"thresholds"`
	// NormalLevel is the raw syscall score that calibrates to 0.5.
	NormalLevel float64 `json:"normal_level"`
	// AtScore is what a policy threshold on the calibrated score would do.
	AtScore []Operating `json:"at_score"`
	// Reference is STIDE (6-call windows) trained and scored on the same
	// traces: the published baseline, measured rather than quoted.
	Reference    Result     `json:"reference_stide"`
	ReferenceROC []ROCPoint `json:"reference_stide_roc"`
}

// Operating is the false-alarm and detection rate at a score threshold.
type Operating struct {
	Threshold float64 `json:"threshold"`
	FAR       float64 `json:"far"`
	DR        float64 `json:"dr"`
}

func operating(normal, attack []float64, t float64) Operating {
	rate := func(x []float64) float64 {
		n := 0
		for _, s := range x {
			if s >= t {
				n++
			}
		}
		return float64(n) / float64(len(x))
	}
	return Operating{Threshold: t, FAR: rate(normal), DR: rate(attack)}
}

// Scorer trains a baseline on traces and scores a trace; the same code the
// manager runs (behavior.Baseline), one stream per trace.
type Scorer struct {
	b   *behavior.Baseline
	rng *rand.Rand
}

// Train learns a baseline from the training traces only.
func Train(cfg behavior.Config, train []Trace) *Scorer {
	b := behavior.NewBaseline(behavior.Key{Namespace: "eval", Owner: "eval", TemplateHash: "train"}, cfg, time.Time{})
	s := &Scorer{b: b, rng: rand.New(rand.NewPCG(1, 2))}
	for _, t := range train {
		var st behavior.Stream
		b.Learn(&detector.BehaviorEvent{Syscalls: t.Syscalls}, &st, s.rng)
	}
	return s
}

// Score is the syscall score of one trace, scored as one batch: the
// calibrated score the manager would report (a monotone map of the raw one,
// so ROC figures are the same for both).
func (s *Scorer) Score(t Trace) float64 {
	var st behavior.Stream
	f := s.b.Score([]detector.BehaviorEvent{{Syscalls: t.Syscalls}}, func(string) *behavior.Stream { return &st }, s.rng)
	return f[0].Score
}

// RunADFA trains on split.Train and scores validation and attack traces.
func RunADFA(name string, split *Split, cfg behavior.Config, progress io.Writer) (*Report, error) {
	fmt.Fprintf(progress, "training on %d traces\n", len(split.Train))
	s := Train(cfg, split.Train)
	bin, err := s.b.MarshalBinary()
	if err != nil {
		return nil, err
	}
	var inMemory []float64
	for _, ts := range [][]Trace{split.Validation, split.Attack} {
		for _, t := range ts {
			inMemory = append(inMemory, s.Score(t))
		}
	}
	inMemoryAUC := AUC(inMemory[:len(split.Validation)], inMemory[len(split.Validation):])
	stored := &behavior.Baseline{}
	if err := stored.UnmarshalBinary(bin); err != nil {
		return nil, fmt.Errorf("decoding the stored baseline: %w", err)
	}
	s.b = stored
	r := &Report{
		Dataset: name, TrainTraces: len(split.Train), NormalTraces: len(split.Validation), AttackTraces: len(split.Attack),
		Model:         fmt.Sprintf("variable-length n-gram (n<=%d), mean longest-match deficit per trace", s.b.Syscalls.N),
		BaselineBytes: len(bin), InMemoryAUC: inMemoryAUC, NormalLevel: s.b.NormalLevel(),
	}
	score := func(what string, ts []Trace) []float64 {
		out := make([]float64, len(ts))
		for i, t := range ts {
			out[i] = s.Score(t)
			r.Syscalls += len(t.Syscalls)
			if (i+1)%500 == 0 || i+1 == len(ts) {
				fmt.Fprintf(progress, "scored %d/%d %s traces\n", i+1, len(ts), what)
			}
		}
		return out
	}
	start := time.Now()
	normal := score("normal", split.Validation)
	attack := score("attack", split.Attack)
	r.NsPerSyscall = float64(time.Since(start).Nanoseconds()) / float64(r.Syscalls)

	r.Overall = result("overall", normal, attack)
	r.Families = familyResults(normal, split.Attack, attack)
	r.ROC = ROC(normal, attack)
	r.Thresholds = map[string]float64{"far_1pct": Threshold(normal, 0.01), "far_5pct": Threshold(normal, 0.05)}
	for _, t := range []float64{0.5, 0.8} {
		r.AtScore = append(r.AtScore, operating(normal, attack, t))
	}

	ref := trainSTIDE(split.Train)
	refScores := func(ts []Trace) []float64 {
		out := make([]float64, len(ts))
		for i, t := range ts {
			out[i] = ref.score(t)
		}
		return out
	}
	refNormal, refAttack := refScores(split.Validation), refScores(split.Attack)
	r.Reference = result(fmt.Sprintf("STIDE (n=%d)", stideN), refNormal, refAttack)
	r.ReferenceROC = ROC(refNormal, refAttack)
	return r, nil
}

// familyResults scores each attack family, in name order, against all the
// normal scores; attack[i] is the score of traces[i].
func familyResults(normal []float64, traces []Trace, attack []float64) []Result {
	fam := map[string][]float64{}
	for i, t := range traces {
		fam[t.Family] = append(fam[t.Family], attack[i])
	}
	names := make([]string, 0, len(fam))
	for f := range fam {
		names = append(names, f)
	}
	sort.Strings(names)
	out := make([]Result, 0, len(names))
	for _, f := range names {
		out = append(out, result(f, normal, fam[f]))
	}
	return out
}

func result(name string, normal, attack []float64) Result {
	d1, _ := DetectionAt(normal, attack, 0.01)
	d5, _ := DetectionAt(normal, attack, 0.05)
	return Result{Family: name, Traces: len(attack), AUC: AUC(normal, attack), DR1: d1, DR5: d5}
}

// WriteTable prints the report as a table.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "%s: %d training, %d normal, %d attack traces; %s\n", r.Dataset, r.TrainTraces, r.NormalTraces, r.AttackTraces, r.Model)
	fmt.Fprintf(w, "%-20s %7s %8s %12s %12s\n", "family", "traces", "ROC AUC", "DR@1%FAR", "DR@5%FAR")
	for _, x := range append(append([]Result(nil), r.Families...), r.Overall) {
		fmt.Fprintf(w, "%-20s %7d %8.4f %11.1f%% %11.1f%%\n", x.Family, x.Traces, x.AUC, 100*x.DR1, 100*x.DR5)
	}
	x := r.Reference
	fmt.Fprintf(w, "%-20s %7d %8.4f %11.1f%% %11.1f%%  (reference, same traces)\n", x.Family, x.Traces, x.AUC, 100*x.DR1, 100*x.DR5)
	for _, o := range r.AtScore {
		fmt.Fprintf(w, "policy threshold %.2f on the calibrated score (0.5 = raw %.3f): %.1f%% false alarms, %.1f%% detected\n", o.Threshold, r.NormalLevel, 100*o.FAR, 100*o.DR)
	}
	fmt.Fprintf(w, "scoring: %.0f ns per system call (wall clock, includes trace setup); scored against the stored baseline, %d bytes (AUC %.4f before storing)\n", r.NsPerSyscall, r.BaselineBytes, r.InMemoryAUC)
}
