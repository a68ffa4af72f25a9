package sensor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/behavior"
	"github.com/bulkhead-dev/bulkhead/internal/behavior/kubestore"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/cgroups"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
)

// Config tunes the agent; zero durations take the defaults.
type Config struct {
	Node             string
	CgroupRoot       string
	ManagerNamespace string
	// Behavior sizes the model; its LearningWindow is --learning-window.
	Behavior behavior.Config

	ScanInterval      time.Duration // container rescan (default 5s; also on every pod event)
	BatchInterval     time.Duration // exec/connection events scored together (default 250ms)
	SampleInterval    time.Duration // syscall drain and resource sample (default 10s)
	FlushInterval     time.Duration // baseline flush (default 1m)
	RefreshInterval   time.Duration // an unchanged score is re-sent at most this often (default 5m)
	CollectorRetry    time.Duration // retry of an unavailable collector (default 1m)
	EnforceResync     time.Duration // recompute of what is enforced, besides pod and Quarantine events (default 15s)
	ReconcileInterval time.Duration // Enforcer.Reconcile against the API state (default 5m)
	DNSCacheTTL       time.Duration // cluster DNS endpoints (default 30s)
	// EnforceWorkers bounds the Isolate calls of one sync run at once
	// (default 4): a burst brings tens of pods per node in one sync.
	EnforceWorkers int

	// HealthAddr serves /healthz and /readyz, MetricsAddr /metrics; empty: none.
	HealthAddr, MetricsAddr string
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.ScanInterval, 5*time.Second)
	def(&c.BatchInterval, 250*time.Millisecond)
	def(&c.SampleInterval, 10*time.Second)
	def(&c.FlushInterval, time.Minute)
	def(&c.RefreshInterval, 5*time.Minute)
	def(&c.CollectorRetry, time.Minute)
	def(&c.EnforceResync, 15*time.Second)
	def(&c.ReconcileInterval, 5*time.Minute)
	def(&c.DNSCacheTTL, 30*time.Second)
	if c.EnforceWorkers <= 0 {
		c.EnforceWorkers = 4
	}
	if c.CgroupRoot == "" {
		c.CgroupRoot = "/sys/fs/cgroup"
	}
	return c
}

// Backends are the kernel-facing parts (see node.go).
type Backends struct {
	// NewCollector creates the kernel collector; an *UnavailableError says
	// what the kernel lacks. Retried every Config.CollectorRetry.
	NewCollector func() (Collector, error)
	// SyscallName names a system call number; MaxSyscall is the highest
	// number named (it bounds the seeded vocabulary).
	SyscallName func(nr uint16) string
	MaxSyscall  uint16
	Containers  ContainerSource
	// Enforcer is nil when kernel enforcement is unavailable; EnforcerErr says why.
	Enforcer    Enforcer
	EnforcerErr error
	// Merge folds a node's learning into the shared baseline (default MergeBaselines).
	Merge MergeFunc
}

// tracked is one container the collector observes.
type tracked struct {
	target
	path     string
	usage    Usage
	hasUsage bool
}

// Agent is the node agent.
type Agent struct {
	cfg    Config
	be     Backends
	log    logr.Logger
	cache  cache.Cache
	api    client.Client // uncached reads and writes
	store  *SharedStore
	sender *Sender
	health *health
	vocab  []string
	now    func() time.Time

	podEvents  chan struct{} // rescan containers
	quarEvents chan struct{} // recompute enforcement

	// Owned by the main loop.
	obs      *behavior.Observer
	coll     Collector
	tracked  map[uint64]*tracked
	pods     map[string]*corev1.Pod // namespace/name
	filter   *scoreFilter
	seeded   map[behavior.Key]bool
	reloaded map[behavior.Key]bool
	pending  []detector.BehaviorEvent
	stats    loopStats

	enf *enforcement
	// podCgroups is pod UID → pod cgroup (relative to the root) from the
	// last container scan, for enforcement: a burst's syncs then find
	// their pods without walking the node's cgroup tree each.
	podCgroups atomic.Pointer[map[string]string]
}

type loopStats struct {
	mu                          sync.Mutex
	untrackedEvents, scoresSent uint64
	trackedContainers           int
	duty                        SyscallDuty // zero while no collector runs
}

func (a *Agent) setDuty(d SyscallDuty) {
	a.stats.mu.Lock()
	a.stats.duty = d
	a.stats.mu.Unlock()
}

// New builds an agent watching the pods of cfg.Node through restCfg. scheme
// must know core and security.bulkhead.dev kinds.
func New(cfg Config, be Backends, send SenderConfig, restCfg *rest.Config, scheme *runtime.Scheme, log logr.Logger) (*Agent, error) {
	cfg = cfg.withDefaults()
	if cfg.Node == "" {
		return nil, errors.New("node name is empty: set --node-name or NODE_NAME")
	}
	if cfg.ManagerNamespace == "" {
		return nil, errors.New("manager namespace is empty")
	}
	if be.NewCollector == nil || be.Containers == nil {
		return nil, errors.New("backends: NewCollector and Containers are required")
	}
	if be.Merge == nil {
		be.Merge = MergeBaselines
	}
	api, err := client.New(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating API client: %w", err)
	}
	c, err := cache.New(restCfg, cache.Options{
		Scheme:           scheme,
		DefaultTransform: cache.TransformStripManagedFields(),
		// Only this node's pods: a watch per node, not of the whole cluster.
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Field: fields.OneTermEqualSelector("spec.nodeName", cfg.Node)},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating pod cache: %w", err)
	}
	a := &Agent{
		cfg: cfg, be: be, log: log, cache: c, api: api, now: time.Now,
		store:     &SharedStore{Client: api, Reader: api, Namespace: cfg.ManagerNamespace, Merge: be.Merge},
		vocab:     SyscallVocabulary(be.SyscallName, be.MaxSyscall),
		podEvents: make(chan struct{}, 1), quarEvents: make(chan struct{}, 1),
		tracked: map[uint64]*tracked{}, pods: map[string]*corev1.Pod{},
		seeded: map[behavior.Key]bool{}, reloaded: map[behavior.Key]bool{},
	}
	a.health = newHealth(a)
	a.enf = newEnforcement(a)
	send.Node = cfg.Node
	if a.sender, err = NewSender(send, a.wireState, log.WithName("ingest")); err != nil {
		return nil, err
	}
	a.filter = newScoreFilter(cfg.Node, cfg.RefreshInterval, a.now())
	a.obs = a.newObserver()
	return a, nil
}

func (a *Agent) newObserver() *behavior.Observer {
	return behavior.NewObserver(a.cfg.Behavior, kubestore.Resolver{Reader: a.cache}, a.store)
}

// Sender is the agent's ingestion client (for stats).
func (a *Agent) Sender() *Sender { return a.sender }

// wireState is what every request reports besides scores.
func (a *Agent) wireState() (wire.Coverage, []wire.Enforcement) {
	return a.health.coverage(), a.enf.report()
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Run runs the agent until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := a.health.serve(ctx, a.cfg.HealthAddr, a.cfg.MetricsAddr); err != nil {
		return err
	}
	inf, err := a.cache.GetInformer(ctx, &corev1.Pod{})
	if err != nil {
		return fmt.Errorf("pod informer: %w", err)
	}
	onPod := func(any) { notify(a.podEvents); notify(a.quarEvents) }
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: onPod, DeleteFunc: onPod, UpdateFunc: func(_, n any) { onPod(n) },
	}); err != nil {
		return err
	}
	// Quarantines are read from a watch too: a sync then costs no API
	// request per labelled pod, and a change to a Quarantine (approval,
	// release, deletion) is enforced at once rather than at the resync.
	qinf, err := a.cache.GetInformer(ctx, &securityv1alpha1.Quarantine{})
	if err != nil {
		return fmt.Errorf("quarantine informer: %w", err)
	}
	onQuarantine := func(any) { notify(a.quarEvents) }
	if _, err := qinf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: onQuarantine, DeleteFunc: onQuarantine, UpdateFunc: func(_, n any) { onQuarantine(n) },
	}); err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		if err := a.cache.Start(ctx); err != nil {
			a.log.Error(err, "pod cache stopped")
		}
	})
	wg.Go(func() { a.sender.Run(ctx) })
	if !a.cache.WaitForCacheSync(ctx) {
		return ctx.Err()
	}
	a.health.setSynced()
	wg.Go(func() { a.enf.run(ctx) })
	a.loop(ctx)
	return nil
}

// loop owns the tracking state, the collector and the observer.
func (a *Agent) loop(ctx context.Context) {
	events := make(chan Event, 8192)
	collDone := make(chan error, 1)
	var stopColl context.CancelFunc = func() {}
	startCollector := func() bool {
		c, err := a.be.NewCollector()
		if err != nil {
			a.health.setCollector(err)
			a.log.Error(err, "behaviour collection unavailable; retrying", "every", a.cfg.CollectorRetry)
			return false
		}
		a.coll = c
		a.health.setCollector(nil)
		a.setDuty(c.SyscallDuty())
		for id, t := range a.tracked {
			if err := c.Track(id); err != nil {
				a.log.Error(err, "tracking cgroup", "id", id)
				continue
			}
			a.existingSockets(id, t)
		}
		var runCtx context.Context
		runCtx, stopColl = context.WithCancel(ctx)
		go func() { collDone <- c.Run(runCtx, events) }()
		return true
	}
	retry := time.NewTimer(0)
	defer retry.Stop()
	scan := time.NewTicker(a.cfg.ScanInterval)
	batch := time.NewTicker(a.cfg.BatchInterval)
	sample := time.NewTicker(a.cfg.SampleInterval)
	flush := time.NewTicker(a.cfg.FlushInterval)
	defer func() {
		scan.Stop()
		batch.Stop()
		sample.Stop()
		flush.Stop()
		stopColl()
		if a.coll != nil {
			if err := <-collDone; err != nil && !errors.Is(err, context.Canceled) {
				a.log.V(1).Info("collector stopped", "error", err.Error())
			}
			_ = a.coll.Close()
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := a.obs.Flush(fctx); err != nil {
			a.log.Error(err, "flushing baselines at shutdown")
		}
	}()
	a.rescan(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
			if a.coll == nil && !startCollector() {
				retry.Reset(a.cfg.CollectorRetry)
			}
		case err := <-collDone:
			if ctx.Err() != nil {
				collDone <- err // shutting down: the deferred cleanup waits for it
				return
			}
			_ = a.coll.Close()
			a.coll = nil
			a.setDuty(SyscallDuty{})
			if err == nil {
				err = errors.New("collector stopped")
			}
			a.health.setCollector(err)
			a.log.Error(err, "behaviour collection stopped; retrying", "in", a.cfg.CollectorRetry)
			retry.Reset(a.cfg.CollectorRetry)
		case ev := <-events:
			a.take(ctx, ev)
		case <-a.podEvents:
			a.rescan(ctx)
		case <-scan.C:
			a.rescan(ctx)
		case <-batch.C:
			a.observe(ctx)
		case <-sample.C:
			a.sample()
			a.observe(ctx)
			a.sender.Enqueue(false, a.filter.stale(a.now())...)
		case <-flush.C:
			a.flush(ctx)
		}
	}
}

// take converts one collector event of a tracked container.
func (a *Agent) take(ctx context.Context, ev Event) {
	t, ok := a.tracked[ev.CgroupID]
	if !ok {
		// Untracked meanwhile: the pod is gone or its cgroup was replaced.
		a.stats.mu.Lock()
		a.stats.untrackedEvents++
		a.stats.mu.Unlock()
		return
	}
	if be, ok := behaviorEvent(t.target, ev); ok {
		a.pending = append(a.pending, be)
	}
	if len(a.pending) >= 4096 {
		a.observe(ctx)
	}
}

// rescan maps containers to this node's pods and tracks exactly those.
func (a *Agent) rescan(ctx context.Context) {
	var list corev1.PodList
	if err := a.cache.List(ctx, &list); err != nil {
		a.log.Error(err, "listing node pods")
		return
	}
	byUID := make(map[string]*corev1.Pod, len(list.Items))
	pods := make(map[string]*corev1.Pod, len(list.Items))
	for i := range list.Items {
		p := &list.Items[i]
		pods[p.Namespace+"/"+p.Name] = p
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			byUID[string(p.UID)] = p
		}
	}
	for key, old := range a.pods {
		if p, ok := pods[key]; !ok || p.UID != old.UID {
			a.filter.forget(string(old.UID))
		}
	}
	a.pods = pods
	conts, err := a.be.Containers.Scan(a.cfg.CgroupRoot)
	if err != nil {
		a.log.Error(err, "scanning container cgroups", "root", a.cfg.CgroupRoot)
		return
	}
	// A pod UID whose containers name two different pod cgroups (a
	// directory made to look like it inside another pod's) is left to the
	// walk: "" marks it unknown.
	podDirs := map[string]string{}
	for _, c := range conts {
		if dir := path.Dir(c.Path); dir != "." {
			if uid, _, ok := cgroups.ParsePod(dir); ok && uid == c.PodUID {
				if prev, seen := podDirs[uid]; !seen {
					podDirs[uid] = dir
				} else if prev != dir {
					podDirs[uid] = ""
				}
			}
		}
	}
	a.podCgroups.Store(&podDirs)
	want := map[uint64]*tracked{}
	for _, c := range conts {
		p := byUID[c.PodUID]
		if p == nil || c.ID == 0 {
			continue
		}
		want[c.ID] = &tracked{target: target{Namespace: p.Namespace, Pod: p.Name, PodUID: string(p.UID), Container: containerName(p, c.ContainerID)}, path: c.Path}
	}
	for id := range a.tracked {
		if _, ok := want[id]; ok {
			continue
		}
		delete(a.tracked, id)
		if a.coll != nil {
			if err := a.coll.Untrack(id); err != nil {
				a.log.V(1).Info("untracking cgroup", "id", id, "error", err.Error())
			}
		}
	}
	for id, t := range want {
		if _, ok := a.tracked[id]; ok {
			continue
		}
		a.tracked[id] = t
		if a.coll != nil {
			if err := a.coll.Track(id); err != nil {
				a.log.Error(err, "tracking cgroup", "id", id, "pod", t.Namespace+"/"+t.Pod)
				continue
			}
			a.existingSockets(id, t)
		}
	}
	a.stats.mu.Lock()
	a.stats.trackedContainers = len(a.tracked)
	a.stats.mu.Unlock()
}

// existingSockets queues the connections and listeners a newly tracked
// container already had: made before the sensor started (or while its
// collector was down), they would otherwise never be learned, and a
// reconnect (after a restart, or after isolation cut it) would look new.
func (a *Agent) existingSockets(id uint64, t *tracked) {
	evs, err := a.coll.Sockets(id, filepath.Join(a.cfg.CgroupRoot, t.path))
	if err != nil {
		a.log.V(1).Info("listing a container's open sockets", "pod", t.Namespace+"/"+t.Pod, "error", err.Error())
	}
	for _, ev := range evs {
		if be, ok := behaviorEvent(t.target, ev); ok {
			a.pending = append(a.pending, be)
		}
	}
}

// knownPodCgroup is the pod's cgroup as the last container scan found it,
// if it still exists; "" when unknown.
func (a *Agent) knownPodCgroup(uid string) string {
	m := a.podCgroups.Load()
	if m == nil {
		return ""
	}
	if rel := (*m)[uid]; rel != "" && a.cgroupExists(rel) {
		return rel
	}
	return ""
}

// cgroupExists reports whether the cgroup rel (relative to the root) is
// still there.
func (a *Agent) cgroupExists(rel string) bool {
	st, err := os.Stat(filepath.Join(a.cfg.CgroupRoot, rel))
	return err == nil && st.IsDir()
}

// containerName finds the container of a pod by runtime id.
func containerName(p *corev1.Pod, id string) string {
	for _, list := range [][]corev1.ContainerStatus{p.Status.ContainerStatuses, p.Status.InitContainerStatuses, p.Status.EphemeralContainerStatuses} {
		for _, s := range list {
			if _, got, _ := strings.Cut(s.ContainerID, "://"); got != "" && got == id {
				return s.Name
			}
		}
	}
	if len(id) > 12 {
		id = id[:12]
	}
	return id
}

// sample drains system-call trigrams and reads resource usage.
func (a *Agent) sample() {
	now := a.now()
	if a.coll != nil {
		d := a.coll.SyscallDuty()
		a.stats.mu.Lock()
		prev := a.stats.duty
		a.stats.mu.Unlock()
		switch {
		case prev.Ratio >= 1 && d.Ratio < 1:
			a.log.Info("heavy system-call load: system calls are collected in windows (execs, connections and resources stay complete)",
				"duty", fmt.Sprintf("%.2f", d.Ratio), "callsPerSecond", int64(d.Rate))
		case prev.Ratio < 1 && d.Ratio >= 1:
			a.log.Info("system calls are collected all the time again", "callsPerSecond", int64(d.Rate))
		}
		a.setDuty(d)
		grams, err := a.coll.DrainSyscalls()
		if err != nil {
			a.log.Error(err, "draining system calls")
		}
		for id, counts := range grams {
			if t, ok := a.tracked[id]; ok {
				a.pending = append(a.pending, syscallEvents(t.target, counts, a.be.SyscallName, now)...)
			}
		}
	}
	for _, t := range a.tracked {
		u, err := a.be.Containers.ReadUsage(a.cfg.CgroupRoot, t.path)
		if err != nil {
			continue // the cgroup went away; the next rescan untracks it
		}
		if t.hasUsage {
			s := a.be.Containers.Rate(t.usage, u)
			a.pending = append(a.pending, detector.BehaviorEvent{
				Namespace: t.Namespace, Pod: t.Pod, Container: t.Container, Time: now, Metrics: &s,
			})
		}
		t.usage, t.hasUsage = u, true
	}
}

// observe learns from and scores the pending events and queues the scores
// that changed meaningfully.
func (a *Agent) observe(ctx context.Context) {
	if len(a.pending) == 0 {
		return
	}
	evs := a.pending
	a.pending = nil
	a.seed(ctx, evs)
	sigs, err := a.obs.ObserveBehavior(ctx, evs)
	if err != nil {
		a.log.Error(err, "scoring behaviour")
	}
	now := a.now()
	var urgent, later []wire.Score
	for _, sig := range sigs {
		p := a.pods[sig.Namespace+"/"+sig.Pod]
		if p == nil {
			continue
		}
		uid := string(p.UID)
		prev, had := a.filter.last[uid]
		if s, ok := a.filter.offer(uid, sig, now); ok {
			if !had || sig.Score > prev.score || (prev.score < ScoreCrossing) != (sig.Score < ScoreCrossing) {
				urgent = append(urgent, s)
			} else {
				later = append(later, s)
			}
		}
	}
	a.sender.Enqueue(true, urgent...)
	a.sender.Enqueue(false, later...)
	a.stats.mu.Lock()
	a.stats.scoresSent += uint64(len(urgent) + len(later))
	a.stats.mu.Unlock()
}

// seed stores a vocabulary-seeded baseline for workloads first seen here.
func (a *Agent) seed(ctx context.Context, evs []detector.BehaviorEvent) {
	for i := range evs {
		p := a.pods[evs[i].Namespace+"/"+evs[i].Pod]
		if p == nil {
			continue
		}
		k := kubestore.KeyOf(p)
		if a.seeded[k] {
			continue
		}
		a.seeded[k] = true
		if err := a.store.Seed(ctx, k, a.cfg.Behavior, a.vocab, a.now()); err != nil {
			a.log.Error(err, "seeding shared baseline", "workload", k.String())
		}
	}
}

// flush merges what this node learned into the shared baselines; once a
// learning window has closed (and every node had a flush to add its last
// learning), the observer is rebuilt so it scores against the merged model.
func (a *Agent) flush(ctx context.Context) {
	if err := a.obs.Flush(ctx); err != nil {
		a.log.Error(err, "flushing baselines")
		return
	}
	now := a.now()
	reload := false
	for k, end := range a.store.LearningEnds() {
		if !a.reloaded[k] && now.After(end.Add(2*a.cfg.FlushInterval)) {
			a.reloaded[k] = true
			reload = true
		}
	}
	if reload {
		a.obs = a.newObserver()
	}
}
