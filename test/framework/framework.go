// Package framework is what Bulkhead's test suites and the demo share: the
// repository root, waiting for a condition, ThreatPolicy and Quarantine
// builders, and a client for the signal-ingestion API. Beneath it,
// test/framework/testenv starts envtest (kube-apiserver and etcd) for the
// packages' suites, test/framework/localcluster a whole local control plane
// with kwok nodes, Bulkhead installed and the manager launched as a process,
// and test/framework/kit the load harness of the chaos, flood and bench
// suites.
package framework

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"
)

// RepoRoot is the repository checkout, found from this file's location.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Wait describes one wait for a condition.
type Wait struct {
	// What is waited for, in progress lines and the timeout error.
	What string
	// Timeout ends the wait with an error naming the last check's error.
	Timeout time.Duration
	// Every is the interval between checks. Default 250ms.
	Every time.Duration
	// Logf, when set (and What is), reports success and, every 10s, what
	// the wait is still waiting on.
	Logf func(format string, args ...any)
}

// permanent marks an error that ends a wait at once.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent wraps an error that no later check can cure (a process has
// exited): Until returns it at once, unwrapped.
func Permanent(err error) error { return permanent{err} }

// Until calls check until it returns nil, Timeout passes or ctx ends; check
// gets a context that ends with the wait.
func (w Wait) Until(ctx context.Context, check func(context.Context) error) error {
	every := w.Every
	if every == 0 {
		every = 250 * time.Millisecond
	}
	logf := w.Logf
	if logf == nil || w.What == "" {
		logf = func(string, ...any) {}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()
	next := 10 * time.Second
	for {
		err := check(ctx)
		if err == nil {
			logf("✓ %s (%s)", w.What, time.Since(start).Round(10*time.Millisecond))
			return nil
		}
		var p permanent
		if errors.As(err, &p) {
			return p.err
		}
		if time.Since(start) > next {
			logf("… still waiting for %s: %v", w.What, err)
			next += 10 * time.Second
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not after %s: %w", w.What, w.Timeout, err)
		case <-time.After(every):
		}
	}
}

// Logger returns a logf that prints "<name> [  12.3s] message" on stderr,
// the time counted from the call.
func Logger(name string) func(format string, args ...any) {
	start := time.Now()
	return func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s [%6.1fs] %s\n", name, time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
}

// EnvInt is the positive integer in the environment variable name, else def.
func EnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
