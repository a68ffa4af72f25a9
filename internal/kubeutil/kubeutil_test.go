package kubeutil

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func TestTruncate(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly", 7, "exactly"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"}, // é is two bytes: never cut inside it
		{"日本", 4, "日"},
		{"x", 0, ""},
	} {
		got := Truncate(c.in, c.n)
		if got != c.want || !utf8.ValidString(got) {
			t.Errorf("Truncate(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
	if got := Truncate(strings.Repeat("a", 2000), MaxMessage); len(got) != MaxMessage {
		t.Fatalf("len %d", len(got))
	}
}

func TestJitterStaysWithinItsSpread(t *testing.T) {
	d := time.Second
	seen := map[bool]bool{}
	for range 1000 {
		j := Jitter(d)
		if j < d || j >= d+time.Duration(JitterFactor*float64(d))+1 {
			t.Fatalf("Jitter(%v) = %v, outside [d, d+20%%]", d, j)
		}
		seen[j == d] = true
	}
	if !seen[false] {
		t.Fatal("1000 draws, none jittered")
	}
}

func TestTargetKind(t *testing.T) {
	if TargetKind(securityv1alpha1.Target{}) != securityv1alpha1.TargetPod || !IsPodTarget(securityv1alpha1.Target{}) {
		t.Fatal("an empty kind is a Pod")
	}
	dep := securityv1alpha1.Target{Kind: securityv1alpha1.TargetDeployment}
	if TargetKind(dep) != securityv1alpha1.TargetDeployment || IsPodTarget(dep) {
		t.Fatal("a Deployment stays a Deployment")
	}
}

func TestToUnstructuredDropsWhatApplyMustNotCarry(t *testing.T) {
	sec := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns"},
		Data:       map[string][]byte{"k": []byte("v")},
	}
	u, err := ToUnstructured(sec)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := u.Object["status"]; ok {
		t.Fatal("status kept")
	}
	if _, ok := u.Object["metadata"].(map[string]any)["creationTimestamp"]; ok {
		t.Fatal("creationTimestamp kept")
	}
	if u.GetKind() != "Secret" || u.GetName() != "s" || u.Object["data"] == nil {
		t.Fatalf("%v", u.Object)
	}
}

func TestFromMapRoundTripsTypedValues(t *testing.T) {
	u, err := FromMap(map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "c"},
		"spec":     map[string]any{"after": metav1.Duration{Duration: time.Minute}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if u.GetName() != "c" || u.Object["spec"].(map[string]any)["after"] != "1m0s" {
		t.Fatalf("%v", u.Object)
	}
	if _, err := FromMap(map[string]any{"bad": make(chan int)}); err == nil {
		t.Fatal("an unencodable value must fail")
	}
}
