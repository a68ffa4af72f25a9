package kubestore

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/internal/behavior"
)

// Pods are read in every tenant namespace: a cluster-wide grant.
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch

// Resolver maps a pod to its workload key from the pod alone: the controlling
// owner, with a Deployment read off its ReplicaSet's name (which is the
// Deployment's name plus the pod-template-hash), so no ReplicaSet access is
// needed; the revision is pod-template-hash or controller-revision-hash.
type Resolver struct {
	Reader client.Reader
}

var _ behavior.Resolver = Resolver{}

// Resolve implements behavior.Resolver.
func (r Resolver) Resolve(ctx context.Context, namespace, name string) (behavior.Key, error) {
	var pod corev1.Pod
	if err := r.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &pod); err != nil {
		if apierrors.IsNotFound(err) {
			return behavior.Key{}, fmt.Errorf("%w %s/%s", behavior.ErrUnknownPod, namespace, name)
		}
		return behavior.Key{}, err
	}
	return KeyOf(&pod), nil
}

// KeyOf is the workload key of a pod.
func KeyOf(pod *corev1.Pod) behavior.Key {
	k := behavior.Key{Namespace: pod.Namespace, Owner: "Pod/" + pod.Name}
	hash := pod.Labels["pod-template-hash"]
	if hash == "" {
		hash = pod.Labels["controller-revision-hash"]
	}
	k.TemplateHash = hash
	owner := metav1.GetControllerOf(pod)
	if owner == nil {
		return k
	}
	k.Owner = owner.Kind + "/" + owner.Name
	if owner.Kind == "ReplicaSet" && hash != "" && strings.HasSuffix(owner.Name, "-"+hash) {
		k.Owner = "Deployment/" + strings.TrimSuffix(owner.Name, "-"+hash)
	}
	return k
}
