// Command kubectl-bulkhead is the Bulkhead kubectl plugin: put it on PATH and
// run `kubectl bulkhead list | describe | approve | release | explain | pause | resume`.
package main

import (
	"os"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/bulkhead-dev/bulkhead/internal/plugin"
)

func main() {
	cmd := plugin.NewCommand(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	if err := cmd.Execute(); err != nil {
		os.Exit(1)
	}
}
