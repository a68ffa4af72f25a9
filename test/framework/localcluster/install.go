package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Install is Bulkhead as installed from config/default.
type Install struct {
	// Namespace and ServiceAccount the manager runs as.
	Namespace      string
	ServiceAccount string
	// ManagerArgs are the manager container's arguments from the Deployment,
	// with $(POD_NAMESPACE) substituted.
	ManagerArgs []string
	// Applied lists the objects applied, as Kind/name.
	Applied []string
	// Skipped is the manager Deployment: there is no container runtime here,
	// so the manager runs as a local process (StartManager) instead.
	Skipped string
}

// InstallBulkhead renders config/default with kubectl's built-in kustomize
// and server-side applies everything except the manager Deployment, then
// waits for the CRDs to be served.
func (c *Cluster) InstallBulkhead(ctx context.Context, repoRoot string) (*Install, error) {
	rendered, err := c.Kubectl(ctx, nil, "kustomize", filepath.Join(repoRoot, "config", "default"))
	if err != nil {
		return nil, err
	}
	inst := &Install{}
	var keep bytes.Buffer
	var crds, sas []string
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(rendered), 4096)
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("decoding config/default: %w", err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		switch obj.GetKind() {
		case "Deployment":
			if err := inst.fromDeployment(&obj); err != nil {
				return nil, err
			}
			continue
		case "ServiceAccount":
			// config/default holds the sensor's account too: the manager's
			// is the one its Deployment names (fromDeployment).
			sas = append(sas, obj.GetNamespace()+"/"+obj.GetName())
		case "CustomResourceDefinition":
			crds = append(crds, "crd/"+obj.GetName())
		}
		inst.Applied = append(inst.Applied, obj.GetKind()+"/"+obj.GetName())
		doc, err := yaml.Marshal(obj.Object)
		if err != nil {
			return nil, err
		}
		keep.WriteString("---\n")
		keep.Write(doc)
	}
	if inst.ServiceAccount == "" || inst.Skipped == "" || !slices.Contains(sas, inst.Namespace+"/"+inst.ServiceAccount) {
		return nil, fmt.Errorf("config/default has no manager Deployment or not the ServiceAccount it runs as (%s/%s; accounts %v)", inst.Namespace, inst.ServiceAccount, sas)
	}
	if _, err := c.Kubectl(ctx, &keep, "apply", "--server-side", "--field-manager=bulkhead-install", "-f", "-"); err != nil {
		return nil, err
	}
	if _, err := c.Kubectl(ctx, nil, append([]string{"wait", "--for=condition=Established", "--timeout=60s"}, crds...)...); err != nil {
		return nil, err
	}
	return inst, nil
}

func (inst *Install) fromDeployment(obj *unstructured.Unstructured) error {
	var d appsv1.Deployment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &d); err != nil {
		return err
	}
	if inst.Skipped != "" || len(d.Spec.Template.Spec.Containers) == 0 {
		return fmt.Errorf("config/default: expected one manager Deployment, got %s/%s too", inst.Skipped, d.Name)
	}
	inst.Skipped = "Deployment/" + d.Name
	inst.Namespace, inst.ServiceAccount = d.Namespace, d.Spec.Template.Spec.ServiceAccountName
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		inst.ManagerArgs = append(inst.ManagerArgs, strings.ReplaceAll(a, "$(POD_NAMESPACE)", d.Namespace))
	}
	return nil
}
