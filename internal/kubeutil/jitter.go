package kubeutil

import (
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// JitterFactor is the spread Jitter adds: up to 20%.
const JitterFactor = 0.2

// Jitter returns d plus a random part of up to JitterFactor·d, so periodic
// work across many objects (re-checks, retries) does not fire together.
func Jitter(d time.Duration) time.Duration { return wait.Jitter(d, JitterFactor) }
