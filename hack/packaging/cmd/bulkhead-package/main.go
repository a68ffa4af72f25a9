// Command bulkhead-package renders dist/install.yaml, the OLM bundle
// (bundle/, bundle.Dockerfile) and the Helm chart (dist/chart) from config/.
// `make build-installer`, `make bundle` and `make helm-chart` run it; with
// -check it writes nothing and fails when the committed artefacts are stale.
//
//	go run ./cmd/bulkhead-package -root ../.. [-check]
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/bulkhead-dev/bulkhead/hack/packaging/internal/gen"
)

func main() {
	root := flag.String("root", "../..", "repository root")
	check := flag.Bool("check", false, "only compare the generated artefacts with those on disk")
	flag.Parse()
	files, err := gen.Generate(*root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bulkhead-package:", err)
		os.Exit(1)
	}
	if *check {
		diffs, err := gen.Diff(*root, files)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bulkhead-package:", err)
			os.Exit(1)
		}
		for _, d := range diffs {
			fmt.Fprintln(os.Stderr, d)
		}
		if len(diffs) > 0 {
			fmt.Fprintln(os.Stderr, "generated packaging is stale: run `make build-installer bundle helm-chart` and commit")
			os.Exit(1)
		}
		return
	}
	if err := gen.Write(*root, files); err != nil {
		fmt.Fprintln(os.Stderr, "bulkhead-package:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %d files: dist/install.yaml, bundle/, bundle.Dockerfile, dist/chart\n", len(files))
}
