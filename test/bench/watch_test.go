//go:build bench

package bench

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// resumable watches what opts selects from the current resource version
// on, and resumes where it stopped when the API server ends the watch: it
// ends a watcher that falls behind a burst, and a plain watch then misses
// every later event (200 Quarantines created within half a second, each
// patched three times right after: the bench saw 35 of them created). After
// a resume the missed events arrive late, never not at all.
func resumable[L interface{ GetResourceVersion() string }](t *testing.T, ctx context.Context, opts metav1.ListOptions,
	list func(context.Context, metav1.ListOptions) (L, error), w func(context.Context, metav1.ListOptions) (watch.Interface, error)) watch.Interface {
	t.Helper()
	now := opts
	now.Limit = 1
	l, err := list(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	rw, err := watchtools.NewRetryWatcherWithContext(ctx, l.GetResourceVersion(), &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector, o.FieldSelector = opts.LabelSelector, opts.FieldSelector
			return w(ctx, o)
		}})
	if err != nil {
		t.Fatal(err)
	}
	return rw
}
