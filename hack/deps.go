//go:build tools

// Package hack pins dependencies that several packages are about to use, so
// `go mod tidy` keeps them while work is in flight.
package hack

import (
	_ "github.com/onsi/ginkgo/v2"
	_ "github.com/onsi/gomega"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "k8s.io/pod-security-admission/policy"
)
