//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/bulkhead-dev/bulkhead/test/framework/kit"
)

// apiRequests reads the API server's apiserver_request_total, summed by verb
// and resource (every client, the control plane's own included), so a phase's
// requests are the difference of two reads; with it the sums and counts of
// the request durations and flow-control waits (metrics). A few lines of
// parsing rather than a Prometheus parser dependency.
func apiRequests(env *kit.Env) (map[string]float64, error) {
	raw, err := env.Fast.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(env.Ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if key, v, ok := metricLine(sc.Text()); ok {
			out[key] += v
		}
	}
	return out, sc.Err()
}

// Keys of apiRequests' map that are not request counts: the API server's
// time per request (by verb and resource) and its flow control's queue
// wait (by priority level), as sums and counts.
const (
	durSum   = "\x00dur-sum "
	durCount = "\x00dur-count "
	apfSum   = "\x00apf-sum "
	apfCount = "\x00apf-count "
)

// metrics are the lines apiRequests reads: by metric name prefix, the key
// prefix in its map and the label that names a series ("" for verb and
// resource).
var metrics = []struct{ prefix, key, label string }{
	{"apiserver_request_total{", "", ""},
	{"apiserver_request_duration_seconds_sum{", durSum, ""},
	{"apiserver_request_duration_seconds_count{", durCount, ""},
	{"apiserver_flowcontrol_request_wait_duration_seconds_sum{", apfSum, "priority_level"},
	{"apiserver_flowcontrol_request_wait_duration_seconds_count{", apfCount, "priority_level"},
}

// metricLine parses one of metrics' lines into its key and value.
func metricLine(line string) (string, float64, bool) {
	for _, m := range metrics {
		rest, ok := strings.CutPrefix(line, m.prefix)
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			return "", 0, false
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return "", 0, false
		}
		l := parseLabels(labels)
		what := l[m.label]
		if m.label == "" {
			what = l["verb"] + " " + l["resource"]
			if l["subresource"] != "" {
				what += "/" + l["subresource"]
			}
		}
		return m.key + what, v, true
	}
	return "", 0, false
}

// timingsPer reports, for the requests between two reads, the flow
// control's mean queue wait per priority level and the API server's mean
// time per request for the n most frequent verb and resource pairs.
func timingsPer(before, after map[string]float64, n int) string {
	mean := func(sumKey, countKey, what string) (float64, float64) {
		c := after[countKey+what] - before[countKey+what]
		if c < 1 {
			return 0, 0
		}
		return (after[sumKey+what] - before[sumKey+what]) / c, c
	}
	type row struct {
		what        string
		mean, count float64
	}
	collect := func(sumKey, countKey string) []row {
		var rows []row
		for k := range after {
			if what, ok := strings.CutPrefix(k, countKey); ok {
				if m, c := mean(sumKey, countKey, what); c > 0 {
					rows = append(rows, row{what, m, c})
				}
			}
		}
		slices.SortFunc(rows, func(a, b row) int { return cmp.Or(cmp.Compare(b.count, a.count), strings.Compare(a.what, b.what)) })
		return rows
	}
	format := func(rows []row) string {
		parts := make([]string, 0, len(rows))
		for _, r := range rows {
			parts = append(parts, fmt.Sprintf("%s %.1fms (%.0f)", r.what, 1000*r.mean, r.count))
		}
		return strings.Join(parts, ", ")
	}
	rows := collect(durSum, durCount)
	return "flow-control queue wait, mean per request (requests): " + format(collect(apfSum, apfCount)) +
		"; API server time, mean per request (requests): " + format(rows[:min(n, len(rows))])
}

func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		k, rest, ok := strings.Cut(s, `="`)
		if !ok {
			break
		}
		v, rest, _ := strings.Cut(rest, `"`)
		out[k] = v
		s = strings.TrimPrefix(rest, ",")
	}
	return out
}

// requestsPer reports the requests between two reads per containment,
// largest first, and their total.
func requestsPer(before, after map[string]float64, n int) (string, float64) {
	type kv struct {
		k string
		v float64
	}
	var rows []kv
	total := 0.0
	for k, v := range after {
		if strings.HasPrefix(k, "\x00") {
			continue
		}
		if d := (v - before[k]) / float64(n); d >= 0.05 {
			rows = append(rows, kv{k, d})
			total += d
		}
	}
	slices.SortFunc(rows, func(a, b kv) int { return cmp.Or(cmp.Compare(b.v, a.v), strings.Compare(a.k, b.k)) })
	parts := make([]string, len(rows))
	for i, r := range rows {
		parts[i] = fmt.Sprintf("%s %.1f", r.k, r.v)
	}
	return strings.Join(parts, ", "), total
}
