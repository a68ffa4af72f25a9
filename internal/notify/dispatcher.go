package notify

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
)

// Outcomes, the "outcome" label of metrics.NotificationsTotal.
const (
	OutcomeDelivered = "delivered"
	OutcomeFailed    = "failed"
	OutcomeDropped   = "dropped"
)

// Options tune a Dispatcher; zero values take the defaults.
type Options struct {
	// Namespace and SecretName locate the configuration Secret.
	Namespace  string
	SecretName string
	// QueueSize bounds each sink's queue (default 256); beyond it events are
	// dropped and counted, never waited for.
	QueueSize int
	// MaxAttempts per event and sink, including the first (default 6).
	MaxAttempts int
	// InitialBackoff doubles after each failed attempt up to MaxBackoff
	// (defaults 1s and 1m), with up to 20% jitter added.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// Timeout of one attempt (default 10s), so a hanging sink holds its
	// queue for a bounded time.
	Timeout time.Duration
	// HTTPClient sends; redirects are never followed, whatever it says.
	HTTPClient *http.Client
	Log        logr.Logger
	// AllowLoopbackHTTP admits http:// sink URLs to loopback hosts: for
	// tests only, never set by the manager.
	AllowLoopbackHTTP bool
}

func (o *Options) defaults() {
	if o.QueueSize <= 0 {
		o.QueueSize = 256
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 6
	}
	if o.InitialBackoff <= 0 {
		o.InitialBackoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Minute
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	c := &http.Client{}
	if o.HTTPClient != nil {
		c = new(http.Client)
		*c = *o.HTTPClient
	}
	// A redirect could send a signed notification (or a Slack URL's path)
	// elsewhere: the sink answers 3xx and the delivery fails.
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	o.HTTPClient = c
}

var sinkNames = []string{SinkSlack, SinkWebhook, SinkCloudEvents}

// Dispatcher fans phase changes out to the configured sinks. Each sink has
// its own bounded queue and worker, so a slow Slack does not delay the
// webhook, and events reach each sink in order. It is a manager Runnable.
type Dispatcher struct {
	opts   Options
	client kubernetes.Interface
	queues map[string]chan Event
	cfg    atomic.Pointer[Config]
	// ready is closed once the Secret has been read (or found absent); until
	// then events are queued for every sink and workers wait.
	ready     chan struct{}
	readyOnce sync.Once
}

// New returns a Dispatcher reading its Secret through client. Start it (or
// add it to the manager) to deliver; until then events only queue.
func New(client kubernetes.Interface, opts Options) *Dispatcher {
	opts.defaults()
	d := &Dispatcher{opts: opts, client: client, queues: map[string]chan Event{}, ready: make(chan struct{})}
	for _, s := range sinkNames {
		d.queues[s] = make(chan Event, opts.QueueSize)
	}
	return d
}

// OnPhaseChange queues a notification for every configured sink. It never
// blocks and makes no API calls: it runs inside the Quarantine reconciler.
// A nil Dispatcher (notifications not set up) does nothing.
func (d *Dispatcher) OnPhaseChange(_ context.Context, q *securityv1alpha1.Quarantine, from, to securityv1alpha1.QuarantinePhase) {
	if d == nil || q == nil {
		return
	}
	d.enqueue(newEvent(uuid.NewString(), time.Now(), q, from, to))
}

// OnNotice queues a notice (see noticeTypes) about a ThreatPolicy or a
// Quarantine; other reasons and objects are ignored. Like OnPhaseChange it
// never blocks.
func (d *Dispatcher) OnNotice(regarding runtime.Object, reason, message string) {
	typ, ok := noticeTypes[reason]
	if d == nil || !ok {
		return
	}
	if ev, ok := newNotice(uuid.NewString(), time.Now(), typ, regarding, message); ok {
		d.enqueue(ev)
	}
}

func (d *Dispatcher) enqueue(ev Event) {
	targets := sinkNames
	if d.isReady() {
		targets = d.configured()
	}
	for _, s := range targets {
		select {
		case d.queues[s] <- ev:
		default:
			metrics.NotificationsTotal.WithLabelValues(s, OutcomeDropped).Inc()
			d.opts.Log.Info("notification queue full, dropping", "sink", s, "type", ev.Type, "quarantine", ev.Namespace+"/"+ev.Quarantine, "policy", ev.Policy)
		}
	}
}

func (d *Dispatcher) isReady() bool {
	select {
	case <-d.ready:
		return true
	default:
		return false
	}
}

func (d *Dispatcher) configured() []string {
	var out []string
	for _, s := range sinkNames {
		if d.sender(s) != nil {
			out = append(out, s)
		}
	}
	return out
}

// sender returns the sink's current sender, nil when it is not configured.
func (d *Dispatcher) sender(sink string) sender {
	cfg := d.cfg.Load()
	if cfg == nil {
		return nil
	}
	switch sink {
	case SinkSlack:
		if cfg.SlackWebhookURL != "" {
			return slackSink{url: cfg.SlackWebhookURL}
		}
	case SinkWebhook:
		if cfg.WebhookURL != "" {
			return webhookSink{url: cfg.WebhookURL, key: cfg.WebhookHMACKey}
		}
	case SinkCloudEvents:
		if cfg.CloudEventsURL != "" {
			return cloudEventsSink{url: cfg.CloudEventsURL, key: cfg.CloudEventsHMACKey}
		}
	}
	return nil
}

// setConfig installs a configuration and releases waiting workers.
func (d *Dispatcher) setConfig(cfg Config) {
	d.cfg.Store(&cfg)
	d.readyOnce.Do(func() { close(d.ready) })
	d.opts.Log.Info("notification sinks configured", "sinks", d.configured())
}

// NeedLeaderElection: only the leader reconciles Quarantines, so only it
// has anything to send.
func (d *Dispatcher) NeedLeaderElection() bool { return true }

// Start watches the Secret and runs one worker per sink until ctx ends.
func (d *Dispatcher) Start(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(d.client, 0,
		informers.WithNamespace(d.opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", d.opts.SecretName).String()
		}))
	inf := factory.Core().V1().Secrets().Informer()
	load := func(obj any) {
		s, ok := obj.(*corev1.Secret)
		if !ok {
			return
		}
		cfg, err := ConfigFromSecret(s, d.opts.AllowLoopbackHTTP)
		if err != nil {
			d.opts.Log.Error(err, "notifications Secret has invalid entries", "secret", d.opts.Namespace+"/"+d.opts.SecretName)
		}
		d.setConfig(cfg)
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    load,
		UpdateFunc: func(_, obj any) { load(obj) },
		DeleteFunc: func(any) { d.setConfig(Config{}) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		// No Secret: notifications are off until one appears.
		d.readyOnce.Do(func() { close(d.ready) })
	}

	var wg sync.WaitGroup
	for _, s := range sinkNames {
		wg.Go(func() { d.work(ctx, s) })
	}
	wg.Wait()
	return nil
}

func (d *Dispatcher) work(ctx context.Context, sink string) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-d.queues[sink]:
			d.deliver(ctx, sink, ev)
		}
	}
}

// deliver tries one event on one sink until it succeeds, fails permanently
// or runs out of attempts. The sender is looked up per attempt so a Secret
// change applies to retries too.
func (d *Dispatcher) deliver(ctx context.Context, sink string, ev Event) {
	backoff := d.opts.InitialBackoff
	log := d.opts.Log.WithValues("sink", sink, "quarantine", ev.Namespace+"/"+ev.Quarantine, "phase", ev.To, "id", ev.ID)
	for attempt := 1; ; attempt++ {
		s := d.sender(sink)
		if s == nil {
			// Not configured (any more): nothing to deliver to.
			return
		}
		actx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
		err := s.send(actx, d.opts.HTTPClient, ev, time.Now())
		cancel()
		if err == nil {
			metrics.NotificationsTotal.WithLabelValues(sink, OutcomeDelivered).Inc()
			return
		}
		if isPermanent(err) || attempt >= d.opts.MaxAttempts || ctx.Err() != nil {
			metrics.NotificationsTotal.WithLabelValues(sink, OutcomeFailed).Inc()
			log.Error(err, "notification not delivered", "attempts", attempt)
			return
		}
		wait := kubeutil.Jitter(backoff)
		log.V(1).Info("notification failed, retrying", "attempt", attempt, "in", wait, "error", err.Error())
		select {
		case <-ctx.Done():
			metrics.NotificationsTotal.WithLabelValues(sink, OutcomeFailed).Inc()
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, d.opts.MaxBackoff)
	}
}
