package framework

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"
)

// Score is one object of POST /v1/scores.
type Score struct {
	Namespace string    `json:"namespace"`
	Pod       string    `json:"pod"`
	Detector  string    `json:"detector"`
	Score     float64   `json:"score"`
	Reason    string    `json:"reason,omitempty"`
	ID        string    `json:"id,omitempty"`
	Time      time.Time `json:"time,omitzero"`
}

// pooled has enough idle connections for suites that post in parallel.
var pooled = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute}}

// Ingest posts signals to a manager's ingestion API with a bearer token.
type Ingest struct {
	// URL is the API's base, such as http://127.0.0.1:8444.
	URL string
	// Token is sent as the bearer token; empty sends none.
	Token string
}

// WithToken is the same API with another bearer token.
func (in Ingest) WithToken(token string) Ingest {
	in.Token = token
	return in
}

// Post sends body (JSON) to path and returns the status and the start of
// the answer's body.
func (in Ingest) Post(ctx context.Context, path string, body []byte) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.URL+path, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	if in.Token != "" {
		req.Header.Set("Authorization", "Bearer "+in.Token)
	}
	resp, err := pooled.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, strings.TrimSpace(string(msg)), nil
}

// PostJSON marshals v and posts it to path.
func (in Ingest) PostJSON(ctx context.Context, path string, v any) (int, string, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return 0, "", err
	}
	return in.Post(ctx, path, body)
}

// PostScores posts one score as an object, or several as a batch, to
// /v1/scores.
func (in Ingest) PostScores(ctx context.Context, scores ...Score) (int, string, error) {
	var body any = scores
	if len(scores) == 1 {
		body = scores[0]
	}
	return in.PostJSON(ctx, "/v1/scores", body)
}
