//go:build tools

// Package kwok pins sigs.k8s.io/kwok for `make kwok`.
package kwok

import _ "sigs.k8s.io/kwok/cmd/kwok"
