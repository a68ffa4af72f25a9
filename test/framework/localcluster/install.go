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
	// The manager runs as the ServiceAccount its Deployment names; other
	// ServiceAccounts (the sensor's) are applied like everything else.
	var accounts []string
	var keep bytes.Buffer
	var crds []string
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
			accounts = append(accounts, obj.GetNamespace()+"/"+obj.GetName())
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
	switch {
	case inst.ServiceAccount != "" && !slices.Contains(accounts, inst.Namespace+"/"+inst.ServiceAccount):
		return nil, fmt.Errorf("config/default: the manager Deployment's ServiceAccount %s/%s is not in it", inst.Namespace, inst.ServiceAccount)
	case inst.ServiceAccount == "" && len(accounts) == 1:
		inst.Namespace, inst.ServiceAccount, _ = strings.Cut(accounts[0], "/")
	}
	if inst.ServiceAccount == "" || inst.Skipped == "" {
		return nil, fmt.Errorf("config/default has no manager ServiceAccount or Deployment")
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
	if sa := d.Spec.Template.Spec.ServiceAccountName; sa != "" {
		inst.Namespace, inst.ServiceAccount = d.Namespace, sa
	}
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		inst.ManagerArgs = append(inst.ManagerArgs, strings.ReplaceAll(a, "$(POD_NAMESPACE)", d.Namespace))
	}
	return nil
}
