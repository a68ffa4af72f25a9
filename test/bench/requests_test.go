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
// requests are the difference of two reads. A few lines of parsing for one
// counter rather than a Prometheus parser dependency.
func apiRequests(env *kit.Env) (map[string]float64, error) {
	raw, err := env.Fast.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(env.Ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "apiserver_request_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		l := parseLabels(labels)
		key := l["verb"] + " " + l["resource"]
		if l["subresource"] != "" {
			key += "/" + l["subresource"]
		}
		out[key] += v
	}
	return out, sc.Err()
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
