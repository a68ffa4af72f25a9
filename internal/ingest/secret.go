package ingest

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Credentials Secret defaults: every install path can create a Secret in
// the manager's namespace without changing the manager's arguments (an
// OLM CSV's are fixed).
const (
	DefaultCredentialsSecret = "bulkhead-ingest-credentials"
	// CredentialsSecretKey holds the credentials, in the file's format.
	CredentialsSecretKey = "tokens"
)

// The manager reads only that Secret, by name.
// +kubebuilder:rbac:groups="",namespace=bulkhead-system,resources=secrets,resourceNames=bulkhead-ingest-credentials,verbs=get;list;watch

// SecretCredentials watches one Secret in the manager's namespace and loads
// its CredentialsSecretKey into Auth as OriginSecret; a deleted Secret, or
// one without the key, revokes its credentials. It runs on every replica
// (a manager Runnable without leader election), so a new leader starts
// with them loaded.
type SecretCredentials struct {
	Client    kubernetes.Interface
	Namespace string
	Name      string
	Auth      *Authenticator
}

// NeedLeaderElection is false: standbys keep credentials ready.
func (s *SecretCredentials) NeedLeaderElection() bool { return false }

// Start watches the Secret (list and watch by field selector, which a Role
// with resourceNames allows) until ctx ends.
func (s *SecretCredentials) Start(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(s.Client, 0,
		informers.WithNamespace(s.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", s.Name).String()
		}))
	inf := factory.Core().V1().Secrets().Informer()
	load := func(obj any) {
		if sec, ok := obj.(*corev1.Secret); ok {
			s.load(sec)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    load,
		UpdateFunc: func(_, obj any) { load(obj) },
		DeleteFunc: func(any) { s.Auth.Load(OriginSecret, nil, nil) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	<-ctx.Done()
	return nil
}

func (s *SecretCredentials) load(sec *corev1.Secret) {
	data, ok := sec.Data[CredentialsSecretKey]
	if !ok {
		s.Auth.Load(OriginSecret, nil, fmt.Errorf("secret %s/%s has no key %q", sec.Namespace, sec.Name, CredentialsSecretKey))
		return
	}
	s.Auth.Load(OriginSecret, data, nil)
}
