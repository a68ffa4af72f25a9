package sensordeploy

import (
	"context"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// +kubebuilder:rbac:groups=apps,namespace=bulkhead-system,resources=daemonsets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",namespace=bulkhead-system,resources=configmaps,verbs=get;list;watch

// Installer keeps the sensor DaemonSet as the switch ConfigMap says: applied
// (and upgraded to the manager's image) while enabled, deleted when disabled
// or the ConfigMap is gone. It deletes only a DaemonSet carrying Bulkhead's
// managed-by label, so a hand-made one of the same name is left alone.
type Installer struct {
	// Client writes; Reader reads uncached (the manager's cache is
	// cluster-wide and the manager may read ConfigMaps only in its namespace).
	Client   client.Client
	Reader   client.Reader
	Recorder events.EventRecorder
	// Base carries the manager namespace, its image and defaults.
	Base Config

	mu    sync.Mutex
	image string // resolved after start (SetImage) when Base has none
}

// SetImage sets the image found once the manager runs (its own pod's).
func (r *Installer) SetImage(image string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.image = image
}

func (r *Installer) base() Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.Base
	if b.Image == "" {
		b.Image = r.image
	}
	return b
}

// Reconcile is plumbing: read the switch, render, apply or delete.
func (r *Installer) Reconcile(ctx context.Context, _ reconcile.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	var cm corev1.ConfigMap
	err := r.Reader.Get(ctx, types.NamespacedName{Namespace: r.Base.Namespace, Name: ConfigName}, &cm)
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	cfg, enabled, perr := ParseConfig(cm.Data, r.base())
	if perr != nil {
		// A bad switch changes nothing: the last good DaemonSet stays.
		r.event(&cm, corev1.EventTypeWarning, "InvalidSensorConfig", perr.Error())
		return ctrl.Result{}, reconcile.TerminalError(perr)
	}
	if !enabled || apierrors.IsNotFound(err) {
		return ctrl.Result{}, r.remove(ctx)
	}
	if cfg.Image == "" {
		msg := "sensor enabled but no image: set the manager's --sensor-image flag or image in the " + ConfigName + " ConfigMap"
		r.event(&cm, corev1.EventTypeWarning, "SensorImageUnknown", msg)
		log.Info(msg)
		// The manager's own image may still be being looked up.
		return ctrl.Result{RequeueAfter: 30 * time.Second}, nil
	}
	ds := DaemonSet(cfg)
	if err := r.Client.Apply(ctx, toApply(ds), client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return ctrl.Result{}, fmt.Errorf("applying sensor DaemonSet: %w", err)
	}
	log.V(1).Info("sensor DaemonSet applied", "image", cfg.Image)
	return ctrl.Result{}, nil
}

func (r *Installer) remove(ctx context.Context) error {
	var ds appsv1.DaemonSet
	err := r.Reader.Get(ctx, types.NamespacedName{Namespace: r.Base.Namespace, Name: Name}, &ds)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ds.Labels[securityv1alpha1.ManagedByLabel] != securityv1alpha1.ManagedByValue {
		return nil
	}
	err = r.Client.Delete(ctx, &ds, client.Preconditions{UID: &ds.UID})
	return client.IgnoreNotFound(err)
}

func (r *Installer) event(cm *corev1.ConfigMap, typ, reason, msg string) {
	if r.Recorder != nil && cm.UID != "" {
		r.Recorder.Eventf(cm, nil, typ, reason, "Configure", "%s", msg)
	}
}

// toApply turns the typed DaemonSet into an apply configuration.
func toApply(ds *appsv1.DaemonSet) runtime.ApplyConfiguration {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ds)
	if err != nil {
		panic(err) // a typed DaemonSet always converts
	}
	delete(u, "status")
	return client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: u})
}

// SetupWithManager watches the switch and the DaemonSet itself (so a deleted
// or edited DaemonSet is put back) through a cache limited to the manager
// namespace, which is all the manager's Role there allows.
func (r *Installer) SetupWithManager(mgr ctrl.Manager) error {
	nsCache, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(),
		DefaultNamespaces: map[string]cache.Config{r.Base.Namespace: {}},
	})
	if err != nil {
		return err
	}
	if err := mgr.Add(nsCache); err != nil {
		return err
	}
	named := func(name string) predicate.TypedFuncs[client.Object] {
		return predicate.NewTypedPredicateFuncs(func(o client.Object) bool { return o.GetName() == name })
	}
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: r.Base.Namespace, Name: Name}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("sensor-installer").
		WatchesRawSource(source.Kind[client.Object](nsCache, &corev1.ConfigMap{}, one, named(ConfigName))).
		WatchesRawSource(source.Kind[client.Object](nsCache, &appsv1.DaemonSet{}, one, named(Name))).
		Complete(r)
}
