package install

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const sensorUser = "system:serviceaccount:bulkhead-system:bulkhead-sensor"

// A node sensor may write behavior-baseline ConfigMaps in the manager
// namespace and nothing else there: without the sensor guard a compromised
// node could rewrite the pause switch and switch containment off.
func TestSensorMayWriteOnlyBaselines(t *testing.T) {
	installOnce(t)
	sensor := as(t, sensorUser, "system:serviceaccounts", "system:serviceaccounts:bulkhead-system")
	ns := "bulkhead-system"
	baseline := func(name string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{
			"app.kubernetes.io/managed-by": "bulkhead", "app.kubernetes.io/component": "behavior-baseline"}},
			BinaryData: map[string][]byte{"baseline": []byte("x")}}
	}
	// The pause switch exists (made by an admin).
	pause := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bulkhead-control"}, Data: map[string]string{"paused": "false"}}
	if err := env.Client.Create(ctx(t), pause); err != nil {
		t.Fatal(err)
	}
	// Wait until the guard is enforced: the sensor's forged switch is refused
	// with the guard's own message (an RBAC refusal does not count).
	var last error
	err := wait.PollUntilContextTimeout(ctx(t), 200*time.Millisecond, 30*time.Second, true, func(c context.Context) (bool, error) {
		probe := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sensor-guard-probe"}}
		last = sensor.Create(c, probe)
		if last == nil {
			_ = env.Client.Delete(c, probe)
			return false, nil
		}
		return strings.Contains(last.Error(), "only behavior baseline ConfigMaps"), nil
	})
	if err != nil {
		t.Fatalf("the sensor guard never took effect (last answer: %v): %v", last, err)
	}

	b := baseline("bulkhead-baseline-test")
	if err := sensor.Create(ctx(t), b); err != nil {
		t.Fatalf("sensor cannot create a baseline: %v", err)
	}
	b.BinaryData["baseline"] = []byte("y")
	if err := sensor.Update(ctx(t), b); err != nil {
		t.Fatalf("sensor cannot update a baseline: %v", err)
	}
	var sw corev1.ConfigMap
	if err := env.Client.Get(ctx(t), client.ObjectKeyFromObject(pause), &sw); err != nil {
		t.Fatal(err)
	}
	sw.Data["paused"] = "true"
	if err := sensor.Update(ctx(t), &sw); err == nil || !strings.Contains(err.Error(), "only behavior baseline ConfigMaps") {
		t.Fatalf("sensor paused containment cluster-wide: %v", err)
	}
	// Relabelling the switch as a baseline is an update of a non-baseline: refused.
	sw.Labels = baseline("x").Labels
	if err := sensor.Update(ctx(t), &sw); err == nil {
		t.Fatal("sensor relabelled the pause switch as a baseline")
	}
	if err := sensor.Delete(ctx(t), &sw); err == nil {
		t.Fatal("sensor deleted the pause switch")
	}
	if err := sensor.Delete(ctx(t), b); err != nil {
		t.Fatalf("sensor cannot prune its baselines: %v", err)
	}
}
