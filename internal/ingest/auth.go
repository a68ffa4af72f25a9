package ingest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
)

// Credential is one token or client certificate and what it may speak for.
type Credential struct {
	// Name identifies the credential in metrics, logs, rate limits and
	// replay ids; never the secret itself. Unique among credentials.
	Name string
	// Detectors it may post for; never empty.
	Detectors []string
	// Namespaces it may post about; empty means all.
	Namespaces []string
	// Train allows training input for the behaviour baselines (system call
	// runs, Tetragon process_exec): a separate right, since it shapes what
	// the behavior model considers normal.
	Train bool

	// origin is where the credential was loaded from (OriginFile, OriginSecret).
	origin string
}

// ID is unique among loaded credentials: rate limits and replay ids are
// kept per credential, so one cannot spend another's.
func (c *Credential) ID() string { return c.origin + "/" + c.Name }

// Allows reports whether the credential may post for detector about namespace.
func (c *Credential) Allows(det, namespace string) bool {
	return contains(c.Detectors, det) && (len(c.Namespaces) == 0 || contains(c.Namespaces, namespace))
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Credentials is the parsed credentials format. Each non-empty, non-comment
// line is a bearer token, or "cert:<common name>" for a client certificate,
// followed by detectors=a,b (required) and optional name=, namespaces=x,y
// and train=true fields. A comment starts with "#" at the start of a line or
// after whitespace, so a "#" inside a token is part of it:
//
//	s3cr3t-token name=falco detectors=falco namespaces=web,shop
//	cert:tetragon-exporter detectors=tetragon train=true
type Credentials struct {
	tokens map[[sha256.Size]byte]*Credential
	certs  map[string]*Credential
}

func (cs *Credentials) len() int { return len(cs.tokens) + len(cs.certs) }

// ParseCredentials reads the credentials format; any bad line is an error.
func ParseCredentials(data []byte) (*Credentials, error) {
	cs, errs := parseCredentials(data)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cs, nil
}

// parseCredentials keeps every good line and returns one error per bad one:
// a reload with a typo still revokes the tokens that were removed.
func parseCredentials(data []byte) (*Credentials, []error) {
	cs := &Credentials{tokens: map[[sha256.Size]byte]*Credential{}, certs: map[string]*Credential{}}
	names := map[string]bool{}
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(stripComment(sc.Text()))
		if len(fields) == 0 {
			continue
		}
		c, err := parseLine(n, fields[1:])
		if err == nil && names[c.Name] {
			err = fmt.Errorf("line %d: name %q is used twice", n, c.Name)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		names[c.Name] = true
		if cn, ok := strings.CutPrefix(fields[0], "cert:"); ok {
			cs.certs[cn] = c
			continue
		}
		cs.tokens[sha256.Sum256([]byte(fields[0]))] = c
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	return cs, errs
}

// stripComment cuts a "#" that starts the line or follows whitespace.
func stripComment(line string) string {
	for i := 0; i < len(line); i++ {
		if line[i] == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t') {
			return line[:i]
		}
	}
	return line
}

func parseLine(n int, fields []string) (*Credential, error) {
	c := &Credential{Name: fmt.Sprintf("line-%d", n)}
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok || v == "" {
			return nil, fmt.Errorf("line %d: want key=value, got %q", n, f)
		}
		switch k {
		case "name":
			c.Name = v
		case "detectors":
			c.Detectors = strings.Split(v, ",")
			for _, d := range c.Detectors {
				if !detection.ValidName(d) {
					return nil, fmt.Errorf("line %d: detector %q is not a DNS label", n, d)
				}
			}
		case "namespaces":
			c.Namespaces = strings.Split(v, ",")
		case "train":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("line %d: train=%q: want true or false", n, v)
			}
			c.Train = b
		default:
			return nil, fmt.Errorf("line %d: unknown key %q", n, k)
		}
	}
	if len(c.Detectors) == 0 {
		return nil, fmt.Errorf("line %d (%s): detectors= is required: name the detectors this credential speaks for", n, c.Name)
	}
	return c, nil
}

// Origins of credentials: the file of --ingest-token-file and the Secret
// the manager watches. Each is the value of the metric's origin label.
const (
	OriginFile   = "file"
	OriginSecret = "secret"
)

// Authenticator resolves a request's credential from a bearer token or a
// verified client certificate. Credentials come from a file, re-read when it
// changes (checked at most once a second), and from whatever Load is given
// (the Secret watcher); tokens rotate without restart. A reload takes the
// good lines of the new content, so a removed token stops working even when
// another line is broken; the problems are logged and counted in
// bulkhead_ingest_credential_errors.
type Authenticator struct {
	path string
	log  logr.Logger

	mu       sync.Mutex
	sets     map[string]*Credentials // by origin
	loadErrs map[string]error
	checked  time.Time
	modTime  time.Time
	size     int64
}

// NewAuthenticator loads the credentials file; an empty path reads none.
// A file that is missing or has a bad line is an error at start.
func NewAuthenticator(path string, log logr.Logger) (*Authenticator, error) {
	a := &Authenticator{path: path, log: log, sets: map[string]*Credentials{}, loadErrs: map[string]error{}}
	if path == "" {
		return a, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	if _, err := ParseCredentials(data); err != nil {
		return nil, fmt.Errorf("credentials file %s: %w", path, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reloadFile(true)
	return a, nil
}

// LoadError is the last load's problems from any origin, nil when all parsed.
func (a *Authenticator) LoadError() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	origins := make([]string, 0, len(a.loadErrs))
	for o := range a.loadErrs {
		origins = append(origins, o)
	}
	sort.Strings(origins)
	errs := make([]error, 0, len(origins))
	for _, o := range origins {
		errs = append(errs, a.loadErrs[o])
	}
	return errors.Join(errs...)
}

// Load replaces the credentials of origin with the good lines of data; a
// read error (readErr) drops them all. Either way the problems are surfaced.
func (a *Authenticator) Load(origin string, data []byte, readErr error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.load(origin, data, readErr)
}

func (a *Authenticator) load(origin string, data []byte, readErr error) {
	var errs []error
	creds := &Credentials{}
	if readErr != nil {
		errs = []error{readErr}
	} else {
		creds, errs = parseCredentials(data)
	}
	for _, c := range creds.tokens {
		c.origin = origin
	}
	for _, c := range creds.certs {
		c.origin = origin
	}
	a.sets[origin] = creds
	metrics.IngestCredentialErrors.WithLabelValues(origin).Set(float64(len(errs)))
	if len(errs) == 0 {
		if a.loadErrs[origin] != nil {
			a.log.Info("ingest credentials load again without errors", "origin", origin, "credentials", creds.len())
		}
		delete(a.loadErrs, origin)
		return
	}
	err := errors.Join(errs...)
	a.loadErrs[origin] = err
	a.log.Error(err, "ingest credentials: bad entries refused, the rest in force", "origin", origin, "credentials", creds.len())
}

// reloadFile re-reads the file if it changed; a.mu must be held.
func (a *Authenticator) reloadFile(force bool) {
	st, err := os.Stat(a.path)
	if err != nil {
		// A removed file revokes its tokens.
		if force || !a.modTime.IsZero() {
			a.modTime, a.size = time.Time{}, 0
			a.load(OriginFile, nil, fmt.Errorf("credentials file: %w", err))
		}
		return
	}
	if !force && st.ModTime().Equal(a.modTime) && st.Size() == a.size {
		return
	}
	data, err := os.ReadFile(a.path)
	if err != nil {
		err = fmt.Errorf("credentials file: %w", err)
	}
	a.modTime, a.size = st.ModTime(), st.Size()
	a.load(OriginFile, data, err)
}

// lookup checks the file for changes at most once a second, then finds.
func (a *Authenticator) lookup(find func(*Credentials) *Credential) *Credential {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.path != "" && time.Since(a.checked) >= time.Second {
		a.checked = time.Now()
		a.reloadFile(false)
	}
	for _, o := range []string{OriginSecret, OriginFile} {
		if cs := a.sets[o]; cs != nil {
			if c := find(cs); c != nil {
				return c
			}
		}
	}
	return nil
}

// Authenticate returns the request's credential, or nil.
func (a *Authenticator) Authenticate(r *http.Request) *Credential {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		cn := r.TLS.VerifiedChains[0][0].Subject.CommonName
		if c := a.lookup(func(cs *Credentials) *Credential { return cs.certs[cn] }); c != nil {
			return c
		}
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(token))
	return a.lookup(func(cs *Credentials) *Credential { return cs.tokens[sum] })
}
