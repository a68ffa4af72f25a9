package plugin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/ingest"
	"github.com/bulkhead-dev/bulkhead/internal/ingestca"
)

// liveFlags say where the leader's live scores are read.
type liveFlags struct {
	url    string
	token  string
	caFile string
}

// maxLiveBytes bounds the leader's answer (an explanation is a few KiB).
const maxLiveBytes = 4 << 20

// fetchLive reads the pod's live scores from the leader's ingest endpoint
// with the user's bearer token (--token, else the kubeconfig's). The
// leader's certificate is checked against --ingest-ca-file, else the CA the
// manager publishes in ConfigMap bulkhead-ingest-ca, else the system roots.
func fetchLive(ctx context.Context, cfg *rest.Config, c client.Reader, managerNS string, f liveFlags, ns, pod string) (*detection.Explanation, error) {
	base, err := url.Parse(f.url)
	if err != nil || base.Scheme == "" || base.Host == "" {
		return nil, fmt.Errorf("--ingest-url %q: want https://host:port", f.url)
	}
	ca, err := ingestCA(ctx, c, managerNS, f.caFile)
	if err != nil {
		return nil, err
	}
	// The kubeconfig's credentials, minus what the ingest endpoint does not
	// take: client certificates (TokenReview needs a token) and impersonation.
	lc := &rest.Config{Host: f.url, BearerToken: cfg.BearerToken, BearerTokenFile: cfg.BearerTokenFile,
		ExecProvider: cfg.ExecProvider, AuthProvider: cfg.AuthProvider, Timeout: 10 * time.Second,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca}}
	if f.token != "" {
		lc.BearerToken, lc.BearerTokenFile, lc.ExecProvider, lc.AuthProvider = f.token, "", nil, nil
	}
	if lc.BearerToken == "" && lc.BearerTokenFile == "" && lc.ExecProvider == nil && lc.AuthProvider == nil {
		return nil, errors.New("the kubeconfig has no bearer token (a client certificate cannot be checked by the leader): pass --token")
	}
	hc, err := rest.HTTPClientFor(lc)
	if err != nil {
		return nil, err
	}
	u := base.JoinPath(ingest.ExplainPath, ns, pod)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		var cv *tls.CertificateVerificationError
		if errors.As(err, &cv) {
			return nil, fmt.Errorf("reaching the leader: %w (pass --ingest-ca-file with the CA in ConfigMap %s/%s, key %s)", err, managerNS, ingestca.ConfigMapName, ingestca.CertKey)
		}
		return nil, fmt.Errorf("reaching the leader: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxLiveBytes))
	if err != nil {
		return nil, fmt.Errorf("reading the leader's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e ingest.Error
		if json.Unmarshal(body, &e) == nil && e.Message != "" {
			return nil, fmt.Errorf("the leader answered %d %s: %s", resp.StatusCode, e.Reason, e.Message)
		}
		return nil, fmt.Errorf("the leader answered %s", resp.Status)
	}
	var x detection.Explanation
	if err := json.Unmarshal(body, &x); err != nil {
		return nil, fmt.Errorf("the leader's answer: %w", err)
	}
	return &x, nil
}

// ingestCA is the CA to verify the leader with; nil: the system roots.
func ingestCA(ctx context.Context, c client.Reader, managerNS, file string) ([]byte, error) {
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--ingest-ca-file: %w", err)
		}
		return data, nil
	}
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: managerNS, Name: ingestca.ConfigMapName}, &cm); err == nil {
		if data := cm.Data[ingestca.CertKey]; strings.TrimSpace(data) != "" {
			return []byte(data), nil
		}
	}
	// Not readable here (a tenant): the system roots, which verify a
	// certificate given with --ingest-tls-cert-file from a public CA.
	return nil, nil
}

// explainLive writes where the live view came from and the pod's fresh
// detector scores, or why there is none.
func (v *podView) explainLive(w io.Writer) {
	switch {
	case v.liveURL == "":
		fmt.Fprintln(w, "Live scores:\tnot asked for (--ingest-url reads them from the leader); below is what was recorded")
		return
	case v.liveErr != nil:
		fmt.Fprintf(w, "Live scores:\tunavailable: %v; below is what was recorded\n", v.liveErr)
		return
	}
	x := v.live
	fmt.Fprintf(w, "Live scores:\tfrom the leader at %s (a score stays fresh for %s)\n", x.Time.UTC().Format(time.RFC3339), x.ScoreTTL)
	if len(x.Detectors) == 0 {
		fmt.Fprintln(w, "\t  no fresh detector score")
	}
	for _, d := range x.Detectors {
		line := fmt.Sprintf("%s %s, %s old", d.Name, d.Score, d.Age)
		if d.Reason != "" {
			line += ": " + d.Reason
		}
		fmt.Fprintf(w, "\t  %s\n", line)
	}
}

// livePolicy writes the policy's live score and streak and returns its
// live view, or nil when there is none.
func (v *podView) livePolicy(w io.Writer, p *securityv1alpha1.ThreatPolicy) *detection.PolicyScore {
	if v.live == nil {
		return nil
	}
	var ps *detection.PolicyScore
	for i := range v.live.Policies {
		if v.live.Policies[i].Name == p.Name {
			ps = &v.live.Policies[i]
		}
	}
	if ps == nil {
		fmt.Fprintln(w, "  Live score:\tthe leader does not evaluate this policy for the pod")
		return nil
	}
	corroborated := "destructive steps allowed"
	if !ps.Corroborated {
		corroborated = "destructive steps wait for minFreshWeight or a second fresh detector"
	}
	fmt.Fprintf(w, "  Live score:\t%s now (%s)\n", ps.Score, corroborated)
	for _, c := range ps.Breakdown {
		fmt.Fprintf(w, "  \t  %s\n", scoreLine(c))
	}
	streak := fmt.Sprintf("%d of %d evaluation(s) at or above %s", ps.Streak, ps.Sustain, ps.Threshold)
	if ps.LastEvaluated != nil {
		streak += ", last evaluated " + v.now.Sub(*ps.LastEvaluated).Round(time.Second).String() + " ago"
	} else {
		streak += ", never evaluated"
	}
	if ps.SustainFor != "" {
		streak += fmt.Sprintf("; sustainFor %s, held %s", ps.SustainFor, ps.HeldFor)
	}
	if ps.Triggered {
		streak += "; triggered"
	}
	fmt.Fprintf(w, "  Streak:\t%s\n", streak)
	return ps
}
