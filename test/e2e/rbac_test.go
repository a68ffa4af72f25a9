//go:build e2e

package e2e

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestManagerCannotTouchTenantSecrets: the manager could create and patch
// Secrets in every namespace, and a no-op patch returns the data. Under its
// own ServiceAccount it can now neither read, list, patch nor create a
// Secret in a tenant namespace; its evidence Secrets are in its namespace.
func TestManagerCannotTouchTenantSecrets(t *testing.T) {
	ctx := env.ctx
	admin := env.cluster.Kube
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "tenant-secrets-"}}
	ns, err := admin.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}) })
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns.Name}, StringData: map[string]string{"password": "tenant-secret"}}
	if _, err := admin.CoreV1().Secrets(ns.Name).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", env.manager.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	asManager, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	secrets := asManager.CoreV1().Secrets(ns.Name)
	for what, err := range map[string]error{
		"get":  func() error { _, err := secrets.Get(ctx, "db", metav1.GetOptions{}); return err }(),
		"list": func() error { _, err := secrets.List(ctx, metav1.ListOptions{}); return err }(),
		"no-op patch": func() error {
			_, err := secrets.Patch(ctx, "db", types.MergePatchType, []byte(`{}`), metav1.PatchOptions{})
			return err
		}(),
		"create": func() error {
			_, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "planted"}}, metav1.CreateOptions{})
			return err
		}(),
	} {
		if !apierrors.IsForbidden(err) {
			t.Errorf("the manager may %s Secrets in tenant namespace %s: %v", what, ns.Name, err)
		}
	}
	// Its own namespace is where evidence lives.
	if _, err := asManager.CoreV1().Secrets(env.install.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "security.bulkhead.dev/evidence=true"}); err != nil {
		t.Errorf("the manager cannot list evidence in %s: %v", env.install.Namespace, err)
	}
}

// The manager runs under its ServiceAccount with config/rbac: any API request
// it was refused during the scenarios (including background watches, which no
// single scenario owns) is a permission the shipped RBAC lacks. This file
// sorts last, so the test sees the whole run.
func TestManagerNeverRefusedByRBAC(t *testing.T) {
	refused := env.manager.Forbidden(0)
	for _, f := range refused {
		t.Errorf("config/rbac: the manager %s", f)
	}
	if len(refused) > 0 {
		t.Logf("manager log: %s", env.manager.LogPath)
	}
}
