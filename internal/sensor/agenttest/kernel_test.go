package agenttest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/sensor"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/enforce"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/kernel"
	"github.com/bulkhead-dev/bulkhead/test/framework/nodekit"
)

// senderRole re-executes the test binary as a pod's workload.
const senderRole = "agenttest-sender"

// runSender sends a UDP datagram to addr every 10ms and prints "ok" at its
// first delivered send, "dropped" at its first send the kernel refused
// (EPERM: the isolation's egress program) and "flowing" at the first
// delivered send after that.
func runSender(addr string) int {
	// Unconnected, so destroying the pod's sockets leaves it alone and
	// what refuses its datagrams is the egress program.
	dst, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	c, err := net.ListenUDP("udp4", nil)
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	state := ""
	for {
		_, err := c.WriteToUDP([]byte("probe"), dst)
		switch {
		case err == nil && state == "":
			state = "ok"
			fmt.Println(state)
		case err == nil && state == "dropped":
			state = "flowing"
			fmt.Println(state)
		case errors.Is(err, syscall.EPERM) && state != "dropped":
			state = "dropped"
			fmt.Println(state)
		case err != nil && !errors.Is(err, syscall.EPERM):
			fmt.Println("send-error", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kernelPod is a pod of the API with a kubelet-style cgroup on this host
// and a real process in it sending datagrams.
type kernelPod struct {
	pod  *corev1.Pod
	proc *nodekit.Proc
}

func (k kernelPod) said(word string) bool {
	return slices.Contains(strings.Fields(k.proc.Log(1<<16)), word)
}

// waitSaid waits until the pod's process printed word.
func (k kernelPod) waitSaid(t *testing.T, word string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !k.said(word) {
		if time.Now().After(deadline) {
			t.Fatalf("pod %s did not say %q; its output:\n%s", k.pod.Name, word, k.proc.Log(4096))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// The sensor isolates pods in the kernel from their Quarantines alone (no
// label), many at once, with real cgroups, BPF programs and packets; and
// never where it must not: a protected namespace, the manager's namespace,
// a Failed or unapproved Quarantine, a Quarantine of another namespace.
// Releasing or deleting the Quarantines releases the kernel state and the
// traffic flows again.
func TestKernelEnforcementFromQuarantines(t *testing.T) {
	if err := nodekit.Available(); err != nil {
		t.Skipf("needs a real kernel (root, cgroup v2, BTF): %v", err)
	}
	ctx := context.Background()
	nk, err := nodekit.New(t.TempDir())
	if err != nil {
		t.Skipf("needs a real kernel (cgroups and bpffs): %v", err)
	}
	t.Cleanup(func() {
		if err := nk.Close(); err != nil {
			t.Errorf("cleaning up the host: %v", err)
		}
	})
	enf, err := enforce.New(filepath.Join(nk.PinDir, "bulkhead"))
	if err != nil {
		var me *enforce.MissingError
		if errors.As(err, &me) {
			t.Skipf("kernel enforcement unavailable here: %v", err)
		}
		t.Fatal(err)
	}
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			if _, _, err := sink.ReadFrom(buf); err != nil {
				return
			}
		}
	}()

	ns := namespace(t, "sensor-kernel")
	other := namespace(t, "sensor-kernel-other")
	node := ns + "-node"
	startPod := func(namespace, name string) kernelPod {
		t.Helper()
		p := runningPod(t, namespace, name, node, nodekit.RandHex(32), "", nil)
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), p) })
		c, err := nk.Container(*p)
		if err != nil {
			t.Fatal(err)
		}
		proc, err := c.Start("sender", os.Args[0], senderRole, sink.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		return kernelPod{pod: p, proc: proc}
	}
	newQuarantine := func(namespace, name, target string, approved bool) *securityv1alpha1.Quarantine {
		t.Helper()
		q := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
			Spec: securityv1alpha1.QuarantineSpec{
				Target:   securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: target},
				Actions:  []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}},
				Approved: ptr.To(approved),
			}}
		if err := env.Client.Create(ctx, q); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), q) })
		return q
	}

	// What must never be enforced: each Quarantine exists (and is Failed)
	// before its pod does, so no sync sees it otherwise.
	suffix := ns[len("sensor-kernel-"):]
	never := map[string]kernelPod{}
	for _, c := range []struct{ what, ns, pod string }{
		{"kube-system", "kube-system", "ks-" + suffix},
		{"the manager namespace", managerNS, "mgr-" + suffix},
	} {
		newQuarantine(c.ns, "q-"+c.pod, c.pod, true)
		never[c.what] = startPod(c.ns, c.pod)
	}
	failed := newQuarantine(ns, "q-failed", "failed", true)
	failed.Status.Phase = securityv1alpha1.PhaseFailed
	if err := env.Client.Status().Update(ctx, failed); err != nil {
		t.Fatal(err)
	}
	never["a Failed Quarantine"] = startPod(ns, "failed")
	newQuarantine(ns, "q-unapproved", "unapproved", false)
	never["an unapproved Quarantine"] = startPod(ns, "unapproved")
	newQuarantine(other, "q-crossns", "crossns", true)
	never["a Quarantine of another namespace"] = startPod(ns, "crossns")

	const n = 8
	direct := startPod(ns, "direct")
	burst := make([]kernelPod, 0, n)
	for i := range n {
		burst = append(burst, startPod(ns, fmt.Sprintf("burst-%d", i)))
	}
	all := append(slices.Collect(mapValues(never)), append([]kernelPod{direct}, burst...)...)
	for _, p := range all {
		p.waitSaid(t, "ok")
	}

	startAgent(t, node, newFakeManager(t), &fakeContainers{}, func(c *sensor.Config, be *sensor.Backends) {
		c.CgroupRoot = nk.Root
		be.Containers = kernel.Containers{}
		be.Enforcer = kernel.Enforcer{E: enf, Root: nk.Root}
	})

	// One Quarantine, no label: the pod's datagrams are refused.
	qDirect := newQuarantine(ns, "q-direct", "direct", true)
	direct.waitSaid(t, "dropped")

	// Many at once: each is isolated, once.
	qs := make([]*securityv1alpha1.Quarantine, 0, len(burst))
	for _, p := range burst {
		qs = append(qs, newQuarantine(ns, "q-"+p.pod.Name, p.pod.Name, true))
	}
	for _, p := range burst {
		p.waitSaid(t, "dropped")
	}
	// The packets drop once the programs are attached; the sockets are cut
	// and the isolations completed right after.
	var isos []enforce.Isolation
	waitFor(t, "every isolation complete", func() bool {
		isos, err = enf.List()
		if err != nil {
			t.Fatal(err)
		}
		done := 0
		for _, iso := range isos {
			if iso.Complete {
				done++
			}
		}
		return done >= n+1
	})
	wantPaths := map[string]bool{}
	for _, p := range append([]kernelPod{direct}, burst...) {
		wantPaths[podCgroup(t, nk.Root, p.pod)] = true
	}
	if len(isos) != n+1 {
		t.Errorf("%d isolations pinned, want %d: %+v", len(isos), n+1, isos)
	}
	for _, iso := range isos {
		if !iso.Complete || !wantPaths[iso.Path] {
			t.Errorf("isolation %+v: want complete and of a pod with a Quarantine", iso)
		}
	}
	for what, p := range never {
		if p.said("dropped") {
			t.Errorf("the pod of %s was isolated", what)
		}
	}
	for _, p := range never {
		if p.pod.Labels[securityv1alpha1.QuarantineLabel] != "" || direct.pod.Labels[securityv1alpha1.QuarantineLabel] != "" {
			t.Fatal("a test pod has a quarantine label")
		}
	}

	// Released and deleted Quarantines release the kernel state.
	for _, q := range qs {
		q.Spec.Released = ptr.To(true)
		if err := env.Client.Update(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.Client.Delete(ctx, qDirect); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every isolation released", func() bool { isos, err := enf.List(); return err == nil && len(isos) == 0 })
	for _, p := range append([]kernelPod{direct}, burst...) {
		p.waitSaid(t, "flowing")
	}
	if left := nk.Pins(); len(left) != 0 {
		t.Errorf("pins left after release: %v", left)
	}
}

func mapValues[K comparable, V any](m map[K]V) func(func(V) bool) {
	return func(yield func(V) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

// podCgroup is the absolute pod-level cgroup of p below root.
func podCgroup(t *testing.T, root string, p *corev1.Pod) string {
	t.Helper()
	idx, err := kernel.Containers{}.PodCgroups(root)
	if err != nil {
		t.Fatal(err)
	}
	rel, ok := idx[string(p.UID)]
	if !ok {
		t.Fatalf("no cgroup for pod %s", p.Name)
	}
	return filepath.Join(root, rel)
}
