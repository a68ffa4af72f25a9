package ingest

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kfake "k8s.io/client-go/kubernetes/fake"
)

// Issue 15 item 2: credentials came only from --ingest-token-file, which an
// OLM CSV cannot add; the named Secret is read and watched instead.
func TestCredentialsFromWatchedSecret(t *testing.T) {
	auth, err := NewAuthenticator("", logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	cs := kfake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&SecretCredentials{Client: cs, Namespace: "bulkhead-system", Name: DefaultCredentialsSecret, Auth: auth}).Start(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	works := func(token string) bool {
		r, _ := http.NewRequest(http.MethodPost, "/", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		return auth.Authenticate(r) != nil
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out: %s", what)
			}
		}
	}
	if works("one") {
		t.Fatal("a token before any Secret")
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "bulkhead-system", Name: DefaultCredentialsSecret},
		Data: map[string][]byte{CredentialsSecretKey: []byte("one name=one detectors=my-model\n")}}
	if _, err := cs.CoreV1().Secrets("bulkhead-system").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("the Secret's token works", func() bool { return works("one") })
	sec.Data[CredentialsSecretKey] = []byte("two name=two detectors=my-model\nbad line\n")
	if _, err := cs.CoreV1().Secrets("bulkhead-system").Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("rotation applies, with the bad line reported", func() bool { return works("two") && !works("one") && auth.LoadError() != nil })
	if err := cs.CoreV1().Secrets("bulkhead-system").Delete(ctx, sec.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("a deleted Secret revokes its tokens", func() bool { return !works("two") })
}
