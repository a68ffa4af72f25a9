package main

import (
	"context"
	"flag"
	"os"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/bulkhead-dev/bulkhead/internal/sensordeploy"
)

// sensorFlags configure how the manager installs the node sensor.
type sensorFlags struct {
	image     string
	ingestURL string
}

func (f *sensorFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&f.image, "sensor-image", "", "Image of the node sensor DaemonSet (default: the manager's own image, read from its pod; the ConfigMap bulkhead-sensor may override it).")
	fs.StringVar(&f.ingestURL, "sensor-ingest-url", "", "Ingestion address sensors post to (default: https://bulkhead-ingest.<manager namespace>.svc:8444).")
}

// setupSensor adds the installer that runs the sensor DaemonSet while the
// ConfigMap bulkhead-sensor says enabled: "true". The image defaults to the
// manager's own, so an upgrade of the manager upgrades the sensors.
func setupSensor(mgr ctrl.Manager, namespace string, f sensorFlags) error {
	inst := &sensordeploy.Installer{
		Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("bulkhead-sensor-installer"),
		Base: sensordeploy.Config{Namespace: namespace, Image: f.image, IngestURL: f.ingestURL},
	}
	if inst.Base.Image == "" {
		// Resolved once the manager runs (the API may be down at setup).
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
			inst.SetImage(ownImage(ctx, mgr.GetAPIReader(), namespace))
			<-ctx.Done()
			return nil
		})); err != nil {
			return err
		}
	}
	return inst.SetupWithManager(mgr)
}

// ownImage is the image of the manager container of this pod (POD_NAME
// from the downward API); empty when the manager runs outside a pod.
func ownImage(ctx context.Context, r client.Reader, namespace string) string {
	name := os.Getenv("POD_NAME")
	if name == "" {
		return ""
	}
	var pod corev1.Pod
	if err := r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &pod); err != nil {
		ctrl.Log.WithName("setup").Error(err, "reading the manager's own pod for the sensor image")
		return ""
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == "manager" {
			return c.Image
		}
	}
	return ""
}
