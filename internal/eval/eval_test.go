package eval

import (
	"bytes"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/behavior"
)

// sharedDir is the folder of the public data sets: $BULKHEAD_SHARED (CI
// sets it; the tests fail when it lacks them), else ../shared next to the
// repository when it is there. A clone alone has neither: the tests skip,
// saying so (make test works from a clone; make test-behavior runs them).
func sharedDir(t testing.TB) string {
	if d := os.Getenv("BULKHEAD_SHARED"); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := wd; d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			shared := filepath.Join(d, "..", "shared")
			if _, err := os.Stat(shared); err != nil {
				t.Skipf("the public data sets are not here (no BULKHEAD_SHARED, no %s): make test-behavior or CI runs this", shared)
			}
			return shared
		}
	}
	t.Fatal("repository root not found")
	return ""
}

func loadADFA(t testing.TB) *Split {
	s, err := LoadADFA(filepath.Join(sharedDir(t), "datasets", "adfa-ld"))
	if err != nil {
		t.Fatalf("shared ADFA-LD data set: %v", err)
	}
	return s
}

func TestAUC(t *testing.T) {
	for _, c := range []struct {
		name           string
		normal, attack []float64
		want           float64
	}{
		{"separated", []float64{0, 0.1, 0.2}, []float64{0.5, 0.9}, 1},
		{"reversed", []float64{0.5, 0.9}, []float64{0, 0.1}, 0},
		{"all tied", []float64{0.3, 0.3}, []float64{0.3}, 0.5},
		{"one swap", []float64{0, 0.6}, []float64{0.5, 0.9}, 0.75},
	} {
		if got := AUC(c.normal, c.attack); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("%s: AUC = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestDetectionAtAndROC(t *testing.T) {
	normal := make([]float64, 100)
	for i := range normal {
		normal[i] = float64(i) / 100 // 0 .. 0.99
	}
	attack := []float64{0.995, 0.985, 0.955, 0.5}
	if dr, thr := DetectionAt(normal, attack, 0.01); dr != 0.5 || thr != 0.98 {
		t.Errorf("at 1%% FAR: dr %v thr %v, want 0.5 and 0.98", dr, thr)
	}
	if dr, _ := DetectionAt(normal, attack, 0.05); dr != 0.75 {
		t.Errorf("at 5%% FAR: dr %v, want 0.75", dr)
	}
	roc := ROC(normal, attack)
	if roc[0] != (ROCPoint{0, 0}) || roc[len(roc)-1] != (ROCPoint{1, 1}) {
		t.Errorf("ROC runs from %v to %v, want (0,0) to (1,1)", roc[0], roc[len(roc)-1])
	}
	for i := 1; i < len(roc); i++ {
		if roc[i].FAR < roc[i-1].FAR || roc[i].DR < roc[i-1].DR {
			t.Fatalf("ROC not monotone at %d: %v then %v", i, roc[i-1], roc[i])
		}
	}
	var buf bytes.Buffer
	if err := WriteROCPNG(&buf, roc); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil || img.Bounds().Dx() != 480 {
		t.Fatalf("ROC PNG: %v, bounds %v", err, img.Bounds())
	}
}

func TestFamily(t *testing.T) {
	for in, want := range map[string]string{"Hydra_FTP_10": "Hydra_FTP", "Adduser_1": "Adduser", "Web_Shell": "Web_Shell", "x_y_2_3": "x_y_2"} {
		if got := Family(in); got != want {
			t.Errorf("Family(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoadADFA(t *testing.T) {
	s := loadADFA(t)
	if len(s.Train) != 833 || len(s.Validation) != 2186 || len(s.Attack) != 553 {
		t.Fatalf("traces: train %d validation %d attack %d, want 833/2186/553 (README)", len(s.Train), len(s.Validation), len(s.Attack))
	}
	fams := map[string]int{}
	for _, a := range s.Attack {
		fams[a.Family]++
	}
	if fams["Adduser"] != 91 || fams["Hydra_FTP"] != 162 || fams["Hydra_SSH"] != 176 || fams["Java_Meterpreter"] != 124 {
		t.Errorf("families %v do not match the README", fams)
	}
	if got := s.Train[0].Syscalls[:4]; got[0] != "6" || got[2] != "63" {
		t.Errorf("first training trace starts %v, want 6 6 63 6 (README)", got)
	}
}

// TestADFASeparates trains on a slice of the training traces and requires
// each attack family, on a slice, to rank clearly above normal validation
// traces. It fails if the model stops separating attack from normal.
func TestADFASeparates(t *testing.T) {
	s := loadADFA(t)
	every := func(ts []Trace, k int) []Trace {
		var out []Trace
		for i := 0; i < len(ts); i += k {
			out = append(out, ts[i])
		}
		return out
	}
	split := &Split{Train: every(s.Train, 2), Validation: every(s.Validation, 5), Attack: every(s.Attack, 3)}
	r, err := RunADFA("slice", split, behavior.Config{}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("slice: AUC %.3f, DR@1%% %.3f, DR@5%% %.3f; STIDE AUC %.3f", r.Overall.AUC, r.Overall.DR1, r.Overall.DR5, r.Reference.AUC)
	// Full-set AUC is 0.85; a random or inverted model scores about 0.5 or below.
	if r.Overall.AUC < 0.78 {
		t.Errorf("overall AUC %.3f on the slice, want >= 0.78", r.Overall.AUC)
	}
	// The STIDE reference is computed on the same slice; it separates too.
	if r.Reference.AUC < 0.75 || r.Reference.Traces != len(split.Attack) {
		t.Errorf("reference %+v, want AUC >= 0.75 over %d attack traces", r.Reference, len(split.Attack))
	}
	for _, f := range r.Families {
		if f.AUC < 0.7 {
			t.Errorf("%s: AUC %.3f, want >= 0.7", f.Family, f.AUC)
		}
	}
	if r.Overall.DR5 < 0.15 {
		t.Errorf("detection at 5%% false alarms %.3f, want >= 0.15", r.Overall.DR5)
	}
}

func TestLIDDS(t *testing.T) {
	recs, err := LoadLIDDS(filepath.Join(sharedDir(t), "datasets", "lid-ds"))
	if err != nil {
		t.Fatalf("shared LID-DS data set: %v", err)
	}
	if len(recs) != 4 {
		t.Fatalf("%d recordings, want 4", len(recs))
	}
	r := RunLIDDS("lid-ds", recs, behavior.Config{}, time.Second, 0, &bytes.Buffer{})
	var sawAttack, sawNormal bool
	for _, x := range r.Recordings {
		if x.Exploit {
			sawAttack = true
			if math.Abs(x.ExploitSec-13.466) > 0.01 {
				t.Errorf("%s: exploit at %.3fs, want 13.466 (README)", x.Name, x.ExploitSec)
			}
			// The exploit window must stand far above everything before it.
			if x.MaxScore < x.MaxBefore+0.25 {
				t.Errorf("%s: max score %.3f, before the exploit %.3f; want 0.25 higher", x.Name, x.MaxScore, x.MaxBefore)
			}
			if x.DetectionDelay < 0 || x.DetectionDelay > 5 {
				t.Errorf("%s: detection delay %.1fs, want an alarm within 5s of the exploit", x.Name, x.DetectionDelay)
			}
		} else {
			sawNormal = true
			if x.FirstAlarmSec >= 0 {
				t.Errorf("%s: normal recording alarmed at %.1fs", x.Name, x.FirstAlarmSec)
			}
		}
	}
	if !sawAttack || !sawNormal {
		t.Errorf("test recordings: attack %v normal %v, want both", sawAttack, sawNormal)
	}
}

// BenchmarkADFAScore is the per-call cost of scoring the real ADFA-LD
// validation traces with a baseline trained on the training traces.
func BenchmarkADFAScore(b *testing.B) {
	s := loadADFA(b)
	sc := Train(behavior.Config{}, s.Train)
	calls := 0
	for _, t := range s.Validation {
		calls += len(t.Syscalls)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, t := range s.Validation {
			sc.Score(t)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*calls), "ns/syscall")
}

// TestSTIDE checks the reference on hand-made traces: the score is the share
// of 6-call windows that no training trace holds.
func TestSTIDE(t *testing.T) {
	calls := func(s string) Trace { return Trace{Syscalls: strings.Fields(s)} }
	s := trainSTIDE([]Trace{calls("1 2 3 4 5 6 7 8"), calls("9 9 9 9 9 9")})
	for _, tc := range []struct {
		trace string
		want  float64
	}{
		{"1 2 3 4 5 6 7 8", 0},       // the training trace itself
		{"2 3 4 5 6 7", 0},           // one window inside it
		{"9 9 9 9 9 9 9 9 9", 0},     // repeats of a seen window
		{"1 2 3 4 5 6 7 9", 1.0 / 3}, // 1-6 and 2-7 seen, 3-7 then 9 not
		{"1 2 3 4 5 6 42", 0.5},      // 42 was never in training
		{"3 4 5", 1},                 // shorter than a window: the whole trace, unseen
		{"", 0},                      // nothing to score
	} {
		if got := s.score(calls(tc.trace)); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("score(%q) = %v, want %v", tc.trace, got, tc.want)
		}
	}
}
