package threatpolicy

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache/informertest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllertest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/podcache"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// Setup must not need the API server: a manager started before the API is
// reachable waits for it instead of exiting.
func TestSetupWithoutAPIServer(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1", Timeout: time.Second} // nothing listens on port 1
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: testenv.Scheme, Cache: podcache.CacheOptions(), Metrics: metricsserver.Options{BindAddress: "0"},
		// The suite's manager already registered these controller names.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Setup(mgr, Options{ManagerNamespace: managerNS, ScoreTTL: time.Minute}); err != nil {
		t.Fatalf("Setup without an API server: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := mgr.Start(ctx); err != nil {
		t.Fatalf("the manager gave up on the API server within %s: %v", 3*time.Second, err)
	}
}

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
	e := NewEngine(detector.NewStore(time.Minute, 100), nil, nil)
	key := detector.PodKey{Namespace: "ns", Pod: "web"}
	if err := e.Store.Record(context.Background(), []detector.Signal{{Namespace: key.Namespace, Pod: key.Pod, Detector: "falco", Score: 0.9}}); err != nil {
		t.Fatal(err)
	}
	if len(e.Store.Fresh(key)) == 0 {
		t.Fatal("no score recorded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- (&podDeletions{cache: infs, engine: e, retry: 10 * time.Millisecond}).Start(ctx) }()

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
