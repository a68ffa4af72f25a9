// Package kernel connects the node agent (package sensor) to this host: the
// cgroup reader and the kernel enforcer, over the agent's plain types. The
// sensor command and the real-kernel agent tests both use it, so the tests
// run the same code as the node.
package kernel

import (
	"path/filepath"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/sensor"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/cgroups"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/enforce"
)

// Containers reads containers' cgroups (sensor.ContainerSource).
type Containers struct{}

func (Containers) Scan(root string) ([]sensor.Container, error) {
	cs, err := cgroups.Scan(root)
	out := make([]sensor.Container, len(cs))
	for i, c := range cs {
		out[i] = sensor.Container(c)
	}
	return out, err
}

func (Containers) PodCgroups(root string) (map[string]string, error) {
	return cgroups.PodCgroups(root)
}

func (Containers) ReadUsage(root, rel string) (sensor.Usage, error) {
	return cgroups.ReadUsage(root, rel)
}

func (Containers) Rate(prev, cur sensor.Usage) detector.ResourceSample {
	p, ok1 := prev.(cgroups.Usage)
	c, ok2 := cur.(cgroups.Usage)
	if !ok1 || !ok2 {
		return detector.ResourceSample{}
	}
	return cgroups.Rate(p, c)
}

// Enforcer is an enforce.Enforcer as a sensor.Enforcer: the agent names
// cgroups relative to Root; the enforcer attaches to absolute paths.
type Enforcer struct {
	E    *enforce.Enforcer
	Root string
}

func (f Enforcer) abs(rel string) string { return filepath.Join(f.Root, rel) }

func (f Enforcer) rel(abs string) string {
	if r, err := filepath.Rel(f.Root, abs); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return abs
}

func (f Enforcer) Isolate(rel string, o sensor.IsolateOptions) (sensor.IsolateResult, error) {
	r, err := f.E.Isolate(f.abs(rel), enforce.Options(o))
	return sensor.IsolateResult(r), err
}

func (f Enforcer) Attach(rel string, o sensor.IsolateOptions) (sensor.IsolateResult, error) {
	r, err := f.E.Attach(f.abs(rel), enforce.Options(o))
	return sensor.IsolateResult(r), err
}

func (f Enforcer) Release(rel string) error { return f.E.Release(f.abs(rel)) }

func (f Enforcer) Reconcile(want map[string]sensor.IsolateOptions) (applied, released []string, err error) {
	abs := make(map[string]enforce.Options, len(want))
	for rel, o := range want {
		abs[f.abs(rel)] = enforce.Options(o)
	}
	a, r, err := f.E.Reconcile(abs)
	for i := range a {
		a[i] = f.rel(a[i])
	}
	for i := range r {
		r[i] = f.rel(r[i])
	}
	return a, r, err
}

func (f Enforcer) Close() error { return f.E.Close() }
