package eval

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/behavior"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// Recording is one LID-DS 2021 recording.
type Recording struct {
	Name     string // split/name, e.g. test/normal_and_attack/defeated_chandrasekhar_3584
	Split    string // training, validation or test
	Exploit  bool
	Start    time.Time   // warmup_end
	Exploits []time.Time // exploit start times
	Calls    []Call
	Resource []ResourceRow
}

// Call is one system-call entry.
type Call struct {
	Time    time.Time
	Thread  string
	Syscall string
}

// ResourceRow is one row of the .res file.
type ResourceRow struct {
	Time   time.Time
	Sample detector.ResourceSample
}

// LoadLIDDS reads LID-DS 2021 recordings under dir (folders or *.tar.gz):
// <split>/.../<name>.json with the system calls in <name>.sc (sysdig text)
// or <name>.tsv (the shared rendering) and resources in <name>.res.
func LoadLIDDS(dir string) ([]*Recording, error) {
	recs := map[string]*Recording{}
	get := func(name string) *Recording {
		id := strings.TrimSuffix(name, path.Ext(name))
		r, ok := recs[id]
		if !ok {
			r = &Recording{Name: id}
			recs[id] = r
		}
		return r
	}
	err := walk(dir, func(name string, rd io.Reader) error {
		name = path.Clean(filepath.ToSlash(name))
		if strings.Contains(name, "/kernel/") {
			return nil
		}
		var err error
		switch path.Ext(name) {
		case ".json":
			err = readMeta(get(name), rd)
		case ".sc":
			get(name).Calls, err = readCalls(rd, false)
		case ".tsv":
			r := get(name)
			if len(r.Calls) == 0 { // the .sc wins when both exist
				r.Calls, err = readCalls(rd, true)
			}
		case ".res":
			get(name).Resource, err = readRes(rd)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []*Recording
	for id, r := range recs {
		for _, s := range []string{"training", "validation", "test"} {
			if strings.HasPrefix(id, s+"/") || strings.Contains(id, "/"+s+"/") {
				r.Split = s
				break
			}
		}
		if r.Split == "" || r.Start.IsZero() {
			continue
		}
		if len(r.Calls) == 0 {
			return nil, fmt.Errorf("%s: metadata without system calls (.sc or .tsv)", id)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	n := map[string]int{}
	for _, r := range out {
		n[r.Split]++
	}
	if n["training"] == 0 || n["test"] == 0 {
		return nil, fmt.Errorf("%s: no LID-DS layout found (recordings per split: %v)", dir, n)
	}
	return out, nil
}

func unix(sec float64) time.Time {
	s, f := math.Modf(sec)
	return time.Unix(int64(s), int64(f*1e9)).UTC()
}

func readMeta(r *Recording, rd io.Reader) error {
	var m struct {
		Exploit bool `json:"exploit"`
		Time    struct {
			WarmupEnd struct {
				Absolute float64 `json:"absolute"`
			} `json:"warmup_end"`
			Exploit []struct {
				Absolute float64 `json:"absolute"`
			} `json:"exploit"`
		} `json:"time"`
	}
	if err := json.NewDecoder(rd).Decode(&m); err != nil {
		return err
	}
	r.Exploit = m.Exploit
	r.Start = unix(m.Time.WarmupEnd.Absolute)
	for _, e := range m.Time.Exploit {
		r.Exploits = append(r.Exploits, unix(e.Absolute))
	}
	sort.Slice(r.Exploits, func(i, j int) bool { return r.Exploits[i].Before(r.Exploits[j]) })
	return nil
}

// readCalls keeps syscall entries (direction ">"), as LID-DS models do.
// Sysdig: ts uid pid proc tid syscall dir args; tsv: ts cpu proc pid tid vpid
// vtid syscall dir args, with a header.
func readCalls(rd io.Reader, tsv bool) ([]Call, error) {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var out []Call
	for line := 0; sc.Scan(); line++ {
		var f []string
		var tid, call, dir string
		if tsv {
			if line == 0 {
				continue
			}
			f = strings.SplitN(sc.Text(), "\t", 10)
			if len(f) < 9 {
				return nil, fmt.Errorf("line %d: %d columns", line+1, len(f))
			}
			tid, call, dir = f[4], f[7], f[8]
		} else {
			f = strings.SplitN(sc.Text(), " ", 8)
			if len(f) < 7 {
				return nil, fmt.Errorf("line %d: %d fields", line+1, len(f))
			}
			tid, call, dir = f[4], f[5], f[6]
		}
		if dir != ">" {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line+1, err)
		}
		out = append(out, Call{Time: time.Unix(0, ns).UTC(), Thread: tid, Syscall: call})
	}
	return out, sc.Err()
}

func readRes(rd io.Reader) ([]ResourceRow, error) {
	rows, err := csv.NewReader(rd).ReadAll()
	if err != nil {
		return nil, err
	}
	var out []ResourceRow
	for _, row := range rows[min(1, len(rows)):] {
		if len(row) < 7 {
			return nil, fmt.Errorf("%d columns", len(row))
		}
		v := make([]float64, 7)
		for i, s := range row[:7] {
			if s == "NULL" || s == "" {
				continue // not available: count as zero
			}
			if v[i], err = strconv.ParseFloat(s, 64); err != nil {
				return nil, err
			}
		}
		out = append(out, ResourceRow{Time: unix(v[0]), Sample: detector.ResourceSample{
			CPUMillicores: 10 * v[1], // percent of a core -> millicores
			MemoryBytes:   v[2], NetworkRxBytes: v[3], NetworkTxBytes: v[4],
			DiskReadBytes: v[5], DiskWrittenBytes: v[6],
		}})
	}
	return out, nil
}

// RecordingResult is the outcome of replaying one test recording.
type RecordingResult struct {
	Name           string  `json:"name"`
	Exploit        bool    `json:"exploit"`
	Windows        int     `json:"windows"`
	MaxScore       float64 `json:"max_score"`
	MaxBefore      float64 `json:"max_score_before_exploit"`  // whole recording when there is none
	FirstAlarmSec  float64 `json:"first_alarm_after_start_s"` // -1: none
	ExploitSec     float64 `json:"exploit_after_start_s,omitempty"`
	DetectionDelay float64 `json:"detection_delay_s"` // first alarm at/after exploit minus exploit; -1: missed
	FalseAlarms    int     `json:"false_alarms_before_exploit"`
}

// LIDDSReport is the outcome of a LID-DS evaluation.
type LIDDSReport struct {
	Dataset    string            `json:"dataset"`
	Window     string            `json:"window"`
	Threshold  float64           `json:"threshold"`
	Recordings []RecordingResult `json:"recordings"`
}

// RunLIDDS learns from the training recordings, sets the alarm threshold
// (when threshold is 0) at the highest window score on the validation
// recordings (no false alarm there), and replays each test recording in windows of w, scoring
// each window as one batch the way the manager would.
func RunLIDDS(name string, recs []*Recording, cfg behavior.Config, w time.Duration, threshold float64, progress io.Writer) *LIDDSReport {
	rng := rand.New(rand.NewPCG(1, 2))
	b := behavior.NewBaseline(behavior.Key{Namespace: "eval", Owner: "lidds", TemplateHash: "train"}, cfg, time.Time{})
	for _, r := range recs {
		if r.Split != "training" {
			continue
		}
		fmt.Fprintf(progress, "training on %s (%d calls)\n", r.Name, len(r.Calls))
		st := map[string]*behavior.Stream{}
		for _, c := range r.Calls {
			if st[c.Thread] == nil {
				st[c.Thread] = &behavior.Stream{}
			}
			b.Learn(&detector.BehaviorEvent{Syscalls: []string{c.Syscall}}, st[c.Thread], rng)
		}
		for _, row := range r.Resource {
			b.Learn(&detector.BehaviorEvent{Metrics: &row.Sample}, nil, rng)
		}
	}
	rep := &LIDDSReport{Dataset: name, Window: w.String(), Threshold: threshold}
	for _, r := range recs {
		if r.Split == "validation" && threshold == 0 {
			for _, s := range windowScores(b, r, w, rng) {
				rep.Threshold = math.Max(rep.Threshold, s.score)
			}
		}
	}
	for _, r := range recs {
		if r.Split != "test" {
			continue
		}
		fmt.Fprintf(progress, "replaying %s (%d calls)\n", r.Name, len(r.Calls))
		res := RecordingResult{Name: r.Name, Exploit: r.Exploit, FirstAlarmSec: -1, DetectionDelay: -1}
		var exploit time.Time
		if r.Exploit && len(r.Exploits) > 0 {
			exploit = r.Exploits[0]
			res.ExploitSec = exploit.Sub(r.Start).Seconds()
		}
		for _, s := range windowScores(b, r, w, rng) {
			res.Windows++
			res.MaxScore = math.Max(res.MaxScore, s.score)
			if exploit.IsZero() || !s.end.After(exploit) {
				res.MaxBefore = math.Max(res.MaxBefore, s.score)
			}
			if s.score <= rep.Threshold {
				continue
			}
			if res.FirstAlarmSec < 0 {
				res.FirstAlarmSec = s.end.Sub(r.Start).Seconds()
			}
			switch {
			case exploit.IsZero() || s.end.Before(exploit) || s.end.Equal(exploit):
				res.FalseAlarms++
			case res.DetectionDelay < 0:
				res.DetectionDelay = s.end.Sub(exploit).Seconds()
			}
		}
		rep.Recordings = append(rep.Recordings, res)
	}
	return rep
}

type window struct {
	end   time.Time
	score float64
}

// windowScores scores r in consecutive windows of w: one batch per window
// holding each thread's calls and the resource rows in it.
func windowScores(b *behavior.Baseline, r *Recording, w time.Duration, rng *rand.Rand) []window {
	st := map[string]*behavior.Stream{}
	stream := func(c string) *behavior.Stream {
		if st[c] == nil {
			st[c] = &behavior.Stream{}
		}
		return st[c]
	}
	var out []window
	ci, ri := 0, 0
	for end := r.Start.Add(w); ci < len(r.Calls) || ri < len(r.Resource); end = end.Add(w) {
		var evs []detector.BehaviorEvent
		byThread := map[string]int{}
		for ; ci < len(r.Calls) && r.Calls[ci].Time.Before(end); ci++ {
			c := r.Calls[ci]
			i, ok := byThread[c.Thread]
			if !ok {
				i = len(evs)
				byThread[c.Thread] = i
				evs = append(evs, detector.BehaviorEvent{Container: c.Thread})
			}
			evs[i].Syscalls = append(evs[i].Syscalls, c.Syscall)
		}
		for ; ri < len(r.Resource) && r.Resource[ri].Time.Before(end); ri++ {
			evs = append(evs, detector.BehaviorEvent{Metrics: &r.Resource[ri].Sample})
		}
		if len(evs) == 0 {
			continue
		}
		var score float64
		for _, f := range b.Score(evs, stream, rng) {
			score = math.Max(score, f.Score)
		}
		out = append(out, window{end, score})
	}
	return out
}

// WriteTable prints the LID-DS report.
func (r *LIDDSReport) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "%s: windows of %s, alarm when a window scores above %.3f\n", r.Dataset, r.Window, r.Threshold)
	fmt.Fprintf(w, "%-70s %7s %7s %10s %9s %9s %9s %7s\n", "recording", "exploit", "windows", "max before", "max", "exploit@s", "delay s", "FA pre")
	for _, x := range r.Recordings {
		delay := "-"
		if x.DetectionDelay >= 0 {
			delay = fmt.Sprintf("%.1f", x.DetectionDelay)
		} else if x.Exploit {
			delay = "missed"
		}
		fmt.Fprintf(w, "%-70s %7v %7d %10.3f %9.3f %9.1f %9s %7d\n", x.Name, x.Exploit, x.Windows, x.MaxBefore, x.MaxScore, x.ExploitSec, delay, x.FalseAlarms)
	}
}
