package ingest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Credential is one token or client certificate and what it may speak for.
type Credential struct {
	// Name identifies the credential in metrics, logs and rate limits; never
	// the secret itself.
	Name string
	// Detectors it may post for; empty means every non-built-in detector.
	Detectors []string
	// Namespaces it may post about; empty means all.
	Namespaces []string
}

// Allows reports whether the credential may post for detector about
// namespace; builtIn says det is one of Bulkhead's own detectors.
func (c *Credential) Allows(det, namespace string, builtIn bool) bool {
	if len(c.Detectors) == 0 {
		if builtIn {
			return false
		}
	} else if !contains(c.Detectors, det) {
		return false
	}
	return len(c.Namespaces) == 0 || contains(c.Namespaces, namespace)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Credentials is the parsed credentials file. Each non-empty, non-comment
// line is a bearer token, or "cert:<common name>" for a client certificate,
// followed by optional name=, detectors=a,b and namespaces=x,y fields:
//
//	s3cr3t-token name=falco detectors=falco namespaces=web,shop
//	cert:tetragon-exporter detectors=tetragon,behavior
//	another-token            # unbound: any non-built-in detector
type Credentials struct {
	tokens map[[sha256.Size]byte]*Credential
	certs  map[string]*Credential
}

// ParseCredentials reads the credentials file format.
func ParseCredentials(data []byte) (*Credentials, error) {
	cs := &Credentials{tokens: map[[sha256.Size]byte]*Credential{}, certs: map[string]*Credential{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		c := &Credential{Name: fmt.Sprintf("line-%d", n)}
		for _, f := range fields[1:] {
			k, v, ok := strings.Cut(f, "=")
			if !ok || v == "" {
				return nil, fmt.Errorf("line %d: want key=value, got %q", n, f)
			}
			switch k {
			case "name":
				c.Name = v
			case "detectors":
				c.Detectors = strings.Split(v, ",")
			case "namespaces":
				c.Namespaces = strings.Split(v, ",")
			default:
				return nil, fmt.Errorf("line %d: unknown key %q", n, k)
			}
		}
		if cn, ok := strings.CutPrefix(fields[0], "cert:"); ok {
			cs.certs[cn] = c
			continue
		}
		cs.tokens[sha256.Sum256([]byte(fields[0]))] = c
	}
	return cs, sc.Err()
}

// Authenticator resolves a request's credential from a bearer token or a
// verified client certificate. The credentials file is re-read when it
// changes (checked at most once a second), so tokens rotate without restart.
type Authenticator struct {
	path string

	mu        sync.Mutex
	creds     *Credentials
	checked   time.Time
	modTime   time.Time
	size      int64
	loadError error
}

// NewAuthenticator loads the credentials file; an empty path accepts no token.
func NewAuthenticator(path string) (*Authenticator, error) {
	a := &Authenticator{path: path, creds: &Credentials{}}
	if path == "" {
		return a, nil
	}
	if err := a.reload(true); err != nil {
		return nil, err
	}
	return a, nil
}

// LoadError is the last reload failure, nil when the file parsed; the
// previous credentials stay in force meanwhile.
func (a *Authenticator) LoadError() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.loadError
}

// reload re-reads the file if it changed; a.mu must be held unless first.
func (a *Authenticator) reload(force bool) error {
	st, err := os.Stat(a.path)
	if err != nil {
		return fmt.Errorf("credentials file: %w", err)
	}
	if !force && st.ModTime().Equal(a.modTime) && st.Size() == a.size {
		return nil
	}
	data, err := os.ReadFile(a.path)
	if err != nil {
		return fmt.Errorf("credentials file: %w", err)
	}
	creds, err := ParseCredentials(data)
	if err != nil {
		return fmt.Errorf("credentials file %s: %w", a.path, err)
	}
	a.creds, a.modTime, a.size = creds, st.ModTime(), st.Size()
	return nil
}

func (a *Authenticator) current() *Credentials {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.path != "" && time.Since(a.checked) >= time.Second {
		a.checked = time.Now()
		a.loadError = a.reload(false)
	}
	return a.creds
}

// Authenticate returns the request's credential, or nil.
func (a *Authenticator) Authenticate(r *http.Request) *Credential {
	creds := a.current()
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		if c := creds.certs[r.TLS.VerifiedChains[0][0].Subject.CommonName]; c != nil {
			return c
		}
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return nil
	}
	return creds.tokens[sha256.Sum256([]byte(token))]
}
