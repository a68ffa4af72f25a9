// Package testenv forwards to test/framework/testenv, where envtest is
// started now, for the packages that still import this path. Once none
// does, delete it.
//
// Deprecated: import github.com/bulkhead-dev/bulkhead/test/framework/testenv.
package testenv

import (
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/bulkhead-dev/bulkhead/test/framework/testenv"
)

// Env is testenv.Env.
type Env = testenv.Env

// Options is testenv.Options.
type Options = testenv.Options

// Scheme is testenv.Scheme.
var Scheme = testenv.Scheme

// RepoRoot is testenv.RepoRoot.
func RepoRoot() string { return testenv.RepoRoot() }

// Start is testenv.Start.
func Start(opts Options) (*Env, error) { return testenv.Start(opts) }

// GVK is testenv.GVK.
func GVK(group, version, kind string) schema.GroupVersionKind {
	return testenv.GVK(group, version, kind)
}
