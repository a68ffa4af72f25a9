package sensor

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

const testManagerNS = "bulkhead-system"

func tpod(ns, name, quarantineLabel string) corev1.Pod {
	p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "-" + name)}}
	if quarantineLabel != "" {
		p.Labels = map[string]string{securityv1alpha1.QuarantineLabel: quarantineLabel}
	}
	return p
}

type qopt func(*securityv1alpha1.Quarantine)

func tquarantine(ns, name string, kind securityv1alpha1.TargetKind, target string, opts ...qopt) securityv1alpha1.Quarantine {
	q := securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(time.Unix(1000, 0))},
		Spec: securityv1alpha1.QuarantineSpec{
			Target:   securityv1alpha1.Target{Kind: kind, Name: target},
			Actions:  []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}},
			Approved: ptr.To(true), Released: ptr.To(false),
		},
	}
	for _, o := range opts {
		o(&q)
	}
	return q
}

func allowDNS(q *securityv1alpha1.Quarantine) {
	q.Spec.Actions = []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate, Isolate: &securityv1alpha1.IsolateParams{AllowDNS: true}}}
}
func phase(p securityv1alpha1.QuarantinePhase) qopt {
	return func(q *securityv1alpha1.Quarantine) { q.Status.Phase = p }
}
func createdAt(sec int64) qopt {
	return func(q *securityv1alpha1.Quarantine) { q.CreationTimestamp = metav1.NewTime(time.Unix(sec, 0)) }
}

// WantedIsolations: which of the node's pods the kernel isolates, from the
// pods and Quarantines the sensor watches. Each security case names what
// it guards against; each fails if its guard is removed.
func TestWantedIsolations(t *testing.T) {
	cases := []struct {
		name  string
		pods  []corev1.Pod
		qs    []securityv1alpha1.Quarantine
		want  map[string]string // pod UID -> quarantine named
		dns   map[string]bool   // pod UID -> allowDNS, where true
		why   map[string]string // pod UID -> substring of why skipped
		noWhy bool
	}{
		{name: "a Quarantine isolates its pod with no label on it",
			pods: []corev1.Pod{tpod("shop", "web-1", "")},
			qs:   []securityv1alpha1.Quarantine{tquarantine("shop", "q1", securityv1alpha1.TargetPod, "web-1")},
			want: map[string]string{"shop-web-1": "q1"}},
		{name: "an empty kind is a Pod",
			pods: []corev1.Pod{tpod("shop", "web-1", "")},
			qs:   []securityv1alpha1.Quarantine{tquarantine("shop", "q1", "", "web-1", allowDNS)},
			want: map[string]string{"shop-web-1": "q1"}, dns: map[string]bool{"shop-web-1": true}},
		{name: "the label path stays: a workload's Quarantine named by the label",
			pods: []corev1.Pod{tpod("shop", "web-1", "q-deploy")},
			qs:   []securityv1alpha1.Quarantine{tquarantine("shop", "q-deploy", securityv1alpha1.TargetDeployment, "web")},
			want: map[string]string{"shop-web-1": "q-deploy"}},
		{name: "a workload's Quarantine without the label waits for the manager",
			pods: []corev1.Pod{tpod("shop", "web-1", "")},
			qs:   []securityv1alpha1.Quarantine{tquarantine("shop", "q-deploy", securityv1alpha1.TargetDeployment, "web-1")},
			want: map[string]string{}, noWhy: true},
		{name: "security: never in kube-system",
			pods: []corev1.Pod{tpod("kube-system", "coredns-1", "q1")},
			qs:   []securityv1alpha1.Quarantine{tquarantine("kube-system", "q1", securityv1alpha1.TargetPod, "coredns-1")},
			want: map[string]string{}, why: map[string]string{"kube-system-coredns-1": "protected"}},
		{name: "security: never in the manager's namespace",
			pods: []corev1.Pod{tpod(testManagerNS, "manager-1", "")},
			qs:   []securityv1alpha1.Quarantine{tquarantine(testManagerNS, "q1", securityv1alpha1.TargetPod, "manager-1")},
			want: map[string]string{}, why: map[string]string{testManagerNS + "-manager-1": "protected"}},
		{name: "security: never for a Failed Quarantine",
			pods: []corev1.Pod{tpod("shop", "web-1", "")},
			qs:   []securityv1alpha1.Quarantine{tquarantine("shop", "q1", securityv1alpha1.TargetPod, "web-1", phase(securityv1alpha1.PhaseFailed))},
			want: map[string]string{}, why: map[string]string{"shop-web-1": "failed"}},
		{name: "security: never for a Released Quarantine",
			pods: []corev1.Pod{tpod("shop", "web-1", "q1")},
			qs:   []securityv1alpha1.Quarantine{tquarantine("shop", "q1", securityv1alpha1.TargetPod, "web-1", phase(securityv1alpha1.PhaseReleased))},
			want: map[string]string{}, why: map[string]string{"shop-web-1": "released"}},
		{name: "security: never for a released one still releasing",
			pods: []corev1.Pod{tpod("shop", "web-1", "")},
			qs: []securityv1alpha1.Quarantine{tquarantine("shop", "q1", securityv1alpha1.TargetPod, "web-1",
				func(q *securityv1alpha1.Quarantine) { q.Spec.Released = ptr.To(true) }, phase(securityv1alpha1.PhaseContained))},
			want: map[string]string{}, why: map[string]string{"shop-web-1": "released"}},
		{name: "security: never for an unapproved Quarantine",
			pods: []corev1.Pod{tpod("shop", "web-1", "")},
			qs: []securityv1alpha1.Quarantine{tquarantine("shop", "q1", securityv1alpha1.TargetPod, "web-1",
				func(q *securityv1alpha1.Quarantine) { q.Spec.Approved = ptr.To(false) })},
			want: map[string]string{}, why: map[string]string{"shop-web-1": "approval"}},
		{name: "security: never across namespaces, by target or by label",
			pods: []corev1.Pod{tpod("shop", "web-1", ""), tpod("bank", "web-1", "q-other")},
			qs: []securityv1alpha1.Quarantine{tquarantine("other", "q1", securityv1alpha1.TargetPod, "web-1"),
				tquarantine("other", "q-other", securityv1alpha1.TargetPod, "web-1")},
			want: map[string]string{}},
		{name: "security: never an earlier pod's Quarantine (status.target.uid)",
			pods: []corev1.Pod{tpod("shop", "web-1", "")},
			qs: []securityv1alpha1.Quarantine{tquarantine("shop", "q1", securityv1alpha1.TargetPod, "web-1",
				func(q *securityv1alpha1.Quarantine) {
					q.Status.Target = &securityv1alpha1.ResolvedTarget{UID: "an-earlier-pod"}
				})},
			want: map[string]string{}, why: map[string]string{"shop-web-1": "earlier pod"}},
		{name: "a released label's Quarantine gives way to a new direct one",
			pods: []corev1.Pod{tpod("shop", "web-1", "q-old")},
			qs: []securityv1alpha1.Quarantine{tquarantine("shop", "q-old", securityv1alpha1.TargetPod, "web-1", phase(securityv1alpha1.PhaseReleased)),
				tquarantine("shop", "q-new", securityv1alpha1.TargetPod, "web-1", createdAt(2000))},
			want: map[string]string{"shop-web-1": "q-new"}},
		{name: "security: a second Quarantine can only make it stricter (DNS stays open only if all allow it)",
			pods: []corev1.Pod{tpod("shop", "web-1", "q1"), tpod("shop", "web-2", "")},
			qs: []securityv1alpha1.Quarantine{tquarantine("shop", "q1", securityv1alpha1.TargetPod, "web-1", allowDNS),
				tquarantine("shop", "q2", securityv1alpha1.TargetPod, "web-1", createdAt(500)),
				tquarantine("shop", "q3", securityv1alpha1.TargetPod, "web-2", allowDNS, createdAt(3000)),
				tquarantine("shop", "q4", securityv1alpha1.TargetPod, "web-2", allowDNS, createdAt(2000))},
			want: map[string]string{"shop-web-1": "q1", "shop-web-2": "q4"}, dns: map[string]bool{"shop-web-2": true}},
		{name: "a Quarantine for a pod on another node is not this sensor's",
			pods: []corev1.Pod{tpod("shop", "web-1", "")},
			qs:   []securityv1alpha1.Quarantine{tquarantine("shop", "q1", securityv1alpha1.TargetPod, "web-9")},
			want: map[string]string{}, noWhy: true},
		{name: "a label naming a missing Quarantine isolates nothing",
			pods: []corev1.Pod{tpod("shop", "web-1", "q-gone")},
			want: map[string]string{}, why: map[string]string{"shop-web-1": "not found"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, skipped := WantedIsolations(tc.pods, tc.qs, testManagerNS)
			if len(got) != len(tc.want) {
				t.Fatalf("isolated %v, want %v (skipped %v)", got, tc.want, skipped)
			}
			for uid, q := range tc.want {
				w, ok := got[uid]
				if !ok || w.Quarantine != q || w.AllowDNS != tc.dns[uid] || string(w.Pod.UID) != uid {
					t.Errorf("pod %s: got %+v (present %v), want quarantine %s allowDNS %v", uid, w, ok, q, tc.dns[uid])
				}
				if _, ok := skipped[uid]; ok {
					t.Errorf("pod %s both isolated and skipped: %v", uid, skipped)
				}
			}
			for uid, why := range tc.why {
				if !strings.Contains(skipped[uid], why) {
					t.Errorf("pod %s skipped because %q, want it to say %q", uid, skipped[uid], why)
				}
			}
			if tc.noWhy && len(skipped) != 0 {
				t.Errorf("skipped %v, want nothing named", skipped)
			}
		})
	}
}

func TestProtected(t *testing.T) {
	for ns, want := range map[string]bool{"kube-system": true, "kube-public": true, "kube-node-lease": true, testManagerNS: true, "shop": false, "bulkhead-system-2": false} {
		if got := Protected(ns, testManagerNS); got != want {
			t.Errorf("Protected(%q) = %v, want %v", ns, got, want)
		}
	}
}

// threadNice is the nice value of the calling goroutine's thread (it must
// be locked to it).
func threadNice(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", unix.Gettid()))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	n, err := strconv.Atoi(f[16]) // field 19 of stat(5): nice
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Socket cuts run at a lower priority, and the lowered priority ends with
// them instead of passing to other goroutines.
func TestCutsRunAtLowerPriority(t *testing.T) {
	runtime.LockOSThread()
	base := threadNice(t) // the test may run under nice(1)
	runtime.UnlockOSThread()
	got := make(chan [2]int)
	go func() {
		restore := lowerPriority()
		during := threadNice(t)
		restore()
		runtime.LockOSThread() // still locked (same thread) if restore failed
		defer runtime.UnlockOSThread()
		got <- [2]int{during, threadNice(t)}
	}()
	if n, want := <-got, max(base, cutNice); n[0] != want || n[1] != base {
		t.Fatalf("cutting thread at nice %d, then %d; want %d, then %d", n[0], n[1], want, base)
	}
	for range 50 {
		ch := make(chan int)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			ch <- threadNice(t)
		}()
		if n := <-ch; n != base {
			t.Fatalf("another goroutine's thread at nice %d after a cut, want %d", n, base)
		}
	}
}

// Cuts run on a few long-lived threads lowered once: the sensor lacks
// CAP_SYS_NICE, so a thread lowered for one cut could not be raised again.
func TestCuttersLowerEachThreadOnce(t *testing.T) {
	var lowered atomic.Int32
	c := startCutters(2, func() func() {
		lowered.Add(1)
		return lowerPriority()
	})
	var wg sync.WaitGroup
	var mu sync.Mutex
	tids := map[int]bool{}
	for range 20 {
		wg.Go(func() {
			c.do(func() {
				if n := threadNice(t); n < cutNice {
					t.Errorf("cut at nice %d, want at least %d", n, cutNice)
				}
				mu.Lock()
				tids[unix.Gettid()] = true
				mu.Unlock()
			})
		})
	}
	wg.Wait()
	c.stop()
	if n := lowered.Load(); n != 2 {
		t.Fatalf("threads lowered %d times for 20 cuts, want once per cutter (2)", n)
	}
	if len(tids) > 2 {
		t.Fatalf("20 cuts ran on %d threads, want at most the 2 cutters'", len(tids))
	}
}
