package detection

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache/informertest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllertest"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// failingInformers fails GetInformer until ok is set, like a cache whose API
// server is not up yet.
type failingInformers struct {
	*informertest.FakeInformers
	ok       atomic.Bool
	attempts atomic.Int32
	// mu serialises the fake, whose informer map is not safe for
	// concurrent use (the runnable and the test both reach it).
	mu sync.Mutex
}

func (f *failingInformers) GetInformer(ctx context.Context, obj client.Object, opts ...cache.InformerGetOption) (cache.Informer, error) {
	f.attempts.Add(1)
	if !f.ok.Load() {
		return nil, errors.New("connection refused")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	inf, err := f.FakeInformers.GetInformer(ctx, obj, opts...)
	if err != nil {
		return nil, err
	}
	return &lockedInformer{Informer: inf, mu: &f.mu}, nil
}

// lockedInformer registers handlers under the fake's lock, which the test
// holds while it delivers events (the fake's handler list is unguarded).
type lockedInformer struct {
	cache.Informer
	mu *sync.Mutex
}

func (l *lockedInformer) AddEventHandler(h toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.Informer.AddEventHandler(h)
}

func (f *failingInformers) FakeInformerFor(ctx context.Context, obj client.Object) (*controllertest.FakeInformer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.FakeInformers.FakeInformerFor(ctx, obj)
}

func TestPodDeletionsSubscribeOnceTheAPIAnswers(t *testing.T) {
	infs := &failingInformers{FakeInformers: &informertest.FakeInformers{}}
	e := NewEvaluator(NewStore(time.Minute, 100), nil, nil, NewTriggers(), nil)
	key := PodKey{Namespace: "ns", Pod: "web"}
	e.Store.Put([]detector.Signal{{Namespace: key.Namespace, Pod: key.Pod, Detector: "falco", Score: 0.9}})
	if len(e.Store.Fresh(key)) == 0 {
		t.Fatal("no score recorded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- (&PodDeletions{Cache: infs, Evaluator: e, Retry: 10 * time.Millisecond}).Start(ctx) }()

	eventually(t, func() error {
		if infs.attempts.Load() < 3 {
			return errors.New("not retried yet")
		}
		return nil
	})
	infs.ok.Store(true)
	inf, err := infs.FakeInformerFor(ctx, &corev1.Pod{})
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Pod, UID: "u"}}
	eventually(t, func() error {
		infs.mu.Lock()
		inf.Delete(pod)
		infs.mu.Unlock()
		if len(e.Store.Fresh(key)) != 0 {
			return errors.New("score of the deleted pod still held")
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// eventually polls f for up to 15s.
func eventually(t testing.TB, f func() error) {
	t.Helper()
	var last error
	if err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 15*time.Second, true, func(context.Context) (bool, error) {
		last = f()
		return last == nil, nil
	}); err != nil {
		t.Fatalf("timed out: %v", last)
	}
}
