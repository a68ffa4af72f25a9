package sensordeploy

import (
	"context"
	"os"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

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

func newNS(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "sensor-"}}
	if err := env.Client.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func getDS(t *testing.T, ns string) *appsv1.DaemonSet {
	t.Helper()
	var ds appsv1.DaemonSet
	err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: Name}, &ds)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return &ds
}

// The installer applies the DaemonSet while the switch is on, follows the
// manager's image on upgrade, repairs edits, leaves a bad switch's last good
// state alone and removes only its own DaemonSet when switched off.
func TestInstaller(t *testing.T) {
	ctx := context.Background()
	ns := newNS(t)
	r := &Installer{Client: env.Client, Reader: env.Client, Base: Config{Namespace: ns, Image: "bulkhead:v1"}}
	run := func() error { _, err := r.Reconcile(ctx, reconcile.Request{}); return err }

	// No switch: nothing installed.
	if err := run(); err != nil || getDS(t, ns) != nil {
		t.Fatalf("without the ConfigMap: err=%v ds=%v", err, getDS(t, ns))
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ConfigName}, Data: map[string]string{"enabled": "true"}}
	if err := env.Client.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	if err := run(); err != nil {
		t.Fatal(err)
	}
	ds := getDS(t, ns)
	if ds == nil || ds.Spec.Template.Spec.Containers[0].Image != "bulkhead:v1" {
		t.Fatalf("enabled: ds=%v", ds)
	}
	// Upgrade: the manager restarts with a new image; the sensor follows.
	r.Base.Image = "bulkhead:v2"
	if err := run(); err != nil {
		t.Fatal(err)
	}
	if img := getDS(t, ns).Spec.Template.Spec.Containers[0].Image; img != "bulkhead:v2" {
		t.Fatalf("after upgrade image=%s", img)
	}
	// Someone strips a capability drop: the next pass puts it back.
	ds = getDS(t, ns)
	ds.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Drop = nil
	if err := env.Client.Update(ctx, ds); err != nil {
		t.Fatal(err)
	}
	if err := run(); err != nil {
		t.Fatal(err)
	}
	if d := getDS(t, ns).Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Drop; len(d) != 1 || d[0] != "ALL" {
		t.Fatalf("drop not repaired: %v", d)
	}
	// A bad switch changes nothing.
	cm.Data = map[string]string{"enabled": "true", "learningWindow": "soon"}
	if err := env.Client.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	if err := run(); err == nil {
		t.Fatal("invalid config accepted")
	}
	if getDS(t, ns) == nil {
		t.Fatal("invalid config removed the sensor")
	}
	// Off: removed.
	cm.Data = map[string]string{"enabled": "false"}
	if err := env.Client.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	if err := run(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for getDS(t, ns) != nil && getDS(t, ns).DeletionTimestamp == nil && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if d := getDS(t, ns); d != nil && d.DeletionTimestamp == nil {
		t.Fatal("disabled sensor still installed")
	}
}

// A DaemonSet of the same name that Bulkhead did not make is never deleted.
func TestInstallerLeavesForeignDaemonSet(t *testing.T) {
	ctx := context.Background()
	ns := newNS(t)
	foreign := DaemonSet(Config{Namespace: ns, Image: "someone-else:1", CgroupRoot: "/sys/fs/cgroup"})
	delete(foreign.Labels, "app.kubernetes.io/managed-by")
	if err := env.Client.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	r := &Installer{Client: env.Client, Reader: env.Client, Base: Config{Namespace: ns, Image: "bulkhead:v1"}}
	if _, err := r.Reconcile(ctx, reconcile.Request{}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(foreign), &appsv1.DaemonSet{}); err != nil {
		t.Fatalf("foreign DaemonSet removed: %v", err)
	}
}
