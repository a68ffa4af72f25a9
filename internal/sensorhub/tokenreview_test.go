package sensorhub

import (
	"context"
	"errors"
	"os"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/bulkhead-dev/bulkhead/test/framework/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	e, err := testenv.Start(testenv.Options{})
	if err != nil {
		panic(err)
	}
	env = e
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// mint issues a token for sa, bound to pod when given (as the kubelet does
// for a projected volume).
func mint(t *testing.T, ns, sa, audience string, pod *corev1.Pod) string {
	t.Helper()
	tr := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](600)}}
	if pod != nil {
		tr.Spec.BoundObjectRef = &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	s := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}}
	if err := env.Client.SubResource("token").Create(context.Background(), s, tr); err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// Only the sensor ServiceAccount's token for the ingest audience passes, and
// a pod-bound one names the node it may speak for.
func TestTokenReview(t *testing.T) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "tr-"}}
	if err := env.Client.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	for _, sa := range []string{"bulkhead-sensor", "tenant"} {
		if err := env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: sa}}); err != nil {
			t.Fatal(err)
		}
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "tr-node-1"}}
	if err := env.Client.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, node) })
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "sensor-x"},
		Spec: corev1.PodSpec{NodeName: node.Name, ServiceAccountName: "bulkhead-sensor",
			Containers: []corev1.Container{{Name: "s", Image: "x"}}},
	}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	r := &TokenReviewer{Client: env.Client, Audience: Audience, Username: SensorUsername(ns.Name, "bulkhead-sensor")}

	id, err := r.Review(ctx, mint(t, ns.Name, "bulkhead-sensor", Audience, pod))
	if err != nil {
		t.Fatal(err)
	}
	if id.Node != node.Name {
		t.Fatalf("bound token: node %q, want %q", id.Node, node.Name)
	}
	unbound, err := r.Review(ctx, mint(t, ns.Name, "bulkhead-sensor", Audience, nil))
	if err != nil || unbound.Node != "" {
		t.Fatalf("unbound token: %+v %v", unbound, err)
	}
	for name, tok := range map[string]string{
		"wrong audience": mint(t, ns.Name, "bulkhead-sensor", "https://kubernetes.default.svc", pod),
		"other account":  mint(t, ns.Name, "tenant", Audience, nil),
		"garbage":        "not-a-token",
		"empty":          "",
	} {
		if _, err := r.Review(ctx, tok); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: err = %v, want ErrUnauthenticated", name, err)
		}
	}
}
