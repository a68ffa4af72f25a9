package containment

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// QuarantineNamespaceLabel names the Quarantine's namespace on cluster-scoped
// objects, which cannot carry an owner reference to it.
const QuarantineNamespaceLabel = "security.bulkhead.dev/quarantine-namespace"

// denyFlavor is a network policy API that can express a Deny evaluated
// before any NetworkPolicy allow. Each is used only where it is served.
type denyFlavor struct {
	gvk        schema.GroupVersionKind
	namespaced bool
	spec       func(s *Scope, allowDNS bool) map[string]any
}

// DenyFlavors are the third-party kinds Isolate also writes when served.
var DenyFlavors = []denyFlavor{
	{gvk: schema.GroupVersionKind{Group: "policy.networking.k8s.io", Version: "v1alpha1", Kind: "AdminNetworkPolicy"}, spec: anpSpec},
	{gvk: schema.GroupVersionKind{Group: "policy.networking.k8s.io", Version: "v1alpha2", Kind: "ClusterNetworkPolicy"}, spec: cnpSpec},
	{gvk: schema.GroupVersionKind{Group: "cilium.io", Version: "v2", Kind: "CiliumNetworkPolicy"}, namespaced: true, spec: ciliumSpec},
	{gvk: schema.GroupVersionKind{Group: "crd.projectcalico.org", Version: "v1", Kind: "GlobalNetworkPolicy"}, spec: calicoSpec},
}

// GVK of the flavor.
func (f denyFlavor) GVK() schema.GroupVersionKind { return f.gvk }

// Namespaced reports whether the flavor's objects live in the Quarantine's namespace.
func (f denyFlavor) Namespaced() bool { return f.namespaced }

// name of the flavor's object: cluster-scoped ones carry the namespace.
func (f denyFlavor) name(q *securityv1alpha1.Quarantine) string {
	if f.namespaced {
		return NetworkPolicyName(q.Name)
	}
	return ClusterDenyName(q.Namespace, q.Name)
}

// ClusterDenyName names a Quarantine's cluster-scoped deny: a readable
// prefix and a hash of namespace/name, so team/a-x and team-a/x (the same
// "bulkhead-team-a-x" under the old naming) get different names. At most
// 58 characters, lowercase alphanumerics and '-'.
func ClusterDenyName(namespace, quarantine string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + quarantine))
	prefix := strings.ReplaceAll(namespace+"-"+quarantine, ".", "-")
	if len(prefix) > 32 {
		prefix = prefix[:32]
	}
	return "bulkhead-" + strings.TrimRight(prefix, "-") + "-" + hex.EncodeToString(sum[:8])
}

// ownedBy reports whether an object carries Bulkhead's labels for q: only
// then may it be overwritten or deleted for q.
func ownedBy(u *unstructured.Unstructured, q *securityv1alpha1.Quarantine, namespaced bool) bool {
	want := ManagedLabels(q.Name)
	if !namespaced {
		want[QuarantineNamespaceLabel] = q.Namespace
	}
	return hasLabels(u.GetLabels(), want)
}

func (e *Engine) served(gvk schema.GroupVersionKind) (bool, error) {
	return servedBy(e.Client.RESTMapper(), gvk)
}

// Served reports whether the API server serves the flavor's kind.
func (f denyFlavor) Served(m apimeta.RESTMapper) (bool, error) { return servedBy(m, f.gvk) }

func servedBy(m apimeta.RESTMapper, gvk schema.GroupVersionKind) (bool, error) {
	_, err := m.RESTMapping(gvk.GroupKind(), gvk.Version)
	if apimeta.IsNoMatchError(err) {
		return false, nil
	}
	return err == nil, err
}

// DenyQuarantine is the Quarantine a third-party deny object belongs to,
// from its labels (names may change; labels are what Bulkhead matches on).
func DenyQuarantine(o client.Object) (client.ObjectKey, bool) {
	l := o.GetLabels()
	name := l[securityv1alpha1.QuarantineLabel]
	if l[securityv1alpha1.ManagedByLabel] != securityv1alpha1.ManagedByValue || name == "" {
		return client.ObjectKey{}, false
	}
	ns := o.GetNamespace()
	if ns == "" {
		ns = l[QuarantineNamespaceLabel]
	}
	return client.ObjectKey{Namespace: ns, Name: name}, ns != ""
}

// servedFlavors are the deny flavors the API server serves, remembered
// for a while when the Engine has a ServedKinds.
func (e *Engine) servedFlavors() ([]denyFlavor, error) {
	if e.Served != nil {
		return e.Served.get(e.now().Time, e.lookupFlavors)
	}
	return e.lookupFlavors()
}

func (e *Engine) lookupFlavors() ([]denyFlavor, error) {
	var out []denyFlavor
	for _, f := range DenyFlavors {
		ok, err := e.served(f.gvk)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, f)
		}
	}
	return out, nil
}

func (e *Engine) ensureThirdPartyDeny(ctx context.Context, s *Scope, a securityv1alpha1.Action) (bool, error) {
	flavors, err := e.servedFlavors()
	if err != nil {
		return false, err
	}
	changed := false
	for _, f := range flavors {
		want := f.object(s, allowDNS(a))
		have := &unstructured.Unstructured{}
		have.SetGroupVersionKind(f.gvk)
		err = e.Reader.Get(ctx, client.ObjectKeyFromObject(want), have)
		if err == nil && !f.namespaced && !ownedBy(have, s.Q, false) {
			// Never force over a cluster-wide object that is not ours for
			// this Quarantine. (A namespaced one named bulkhead-<name> in the
			// contained namespace is overwritten: squatting it must not let
			// a tenant keep its pod's traffic flowing.)
			return changed, fmt.Errorf("%s %s exists and is not Bulkhead's for Quarantine %s/%s: not overwriting it",
				f.gvk.Kind, have.GetName(), s.Q.Namespace, s.Q.Name)
		}
		if err == nil && equality.Semantic.DeepEqual(have.Object["spec"], want.Object["spec"]) && hasLabels(have.GetLabels(), want.GetLabels()) {
			continue
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return changed, err
		}
		if err := kubeutil.Apply(ctx, e.Client, want); err != nil {
			return changed, fmt.Errorf("applying %s: %w", f.gvk.Kind, err)
		}
		changed = true
	}
	return changed, nil
}

// Object is the flavor's deny object for a Quarantine, as Isolate applies it.
func (f denyFlavor) Object(q *securityv1alpha1.Quarantine, allowDNS bool) *unstructured.Unstructured {
	return f.object(&Scope{Q: q}, allowDNS)
}

func (f denyFlavor) object(s *Scope, allowDNS bool) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": f.spec(s, allowDNS)}}
	u.SetGroupVersionKind(f.gvk)
	u.SetName(f.name(s.Q))
	l := ManagedLabels(s.Q.Name)
	if f.namespaced {
		u.SetNamespace(s.Q.Namespace)
		u.SetOwnerReferences(append(u.GetOwnerReferences(), OwnerRef(s.Q)))
	} else {
		l[QuarantineNamespaceLabel] = s.Q.Namespace
	}
	u.SetLabels(l)
	return u
}

func (e *Engine) deleteThirdPartyDeny(ctx context.Context, s *Scope) (bool, error) {
	flavors, err := e.servedFlavors()
	if err != nil {
		return false, err
	}
	changed := false
	for _, f := range flavors {
		objs, err := e.denyObjects(ctx, f, s.Q)
		if err != nil {
			return changed, err
		}
		for _, have := range objs {
			if err := ignoreNotFound(e.Client.Delete(ctx, have)); err != nil {
				return changed, err
			}
			changed = true
		}
	}
	return changed, nil
}

// denyObjects are q's deny objects of one flavor, only those carrying
// Bulkhead's labels for q. Cluster-scoped ones are found by label, which
// also finds those created under the old names (bulkhead-<ns>-<name>).
func (e *Engine) denyObjects(ctx context.Context, f denyFlavor, q *securityv1alpha1.Quarantine) ([]*unstructured.Unstructured, error) {
	if f.namespaced {
		have := &unstructured.Unstructured{}
		have.SetGroupVersionKind(f.gvk)
		err := e.Reader.Get(ctx, client.ObjectKey{Namespace: q.Namespace, Name: f.name(q)}, have)
		if apierrors.IsNotFound(err) || (err == nil && !ownedBy(have, q, true)) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return []*unstructured.Unstructured{have}, nil
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(f.gvk.GroupVersion().WithKind(f.gvk.Kind + "List"))
	want := ManagedLabels(q.Name)
	want[QuarantineNamespaceLabel] = q.Namespace
	if err := e.Reader.List(ctx, list, client.MatchingLabels(want)); err != nil {
		return nil, err
	}
	out := make([]*unstructured.Unstructured, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, &list.Items[i])
	}
	return out, nil
}

func quarantineMatch(s *Scope) map[string]any {
	return map[string]any{"matchLabels": map[string]any{securityv1alpha1.QuarantineLabel: s.Q.Name}}
}

func anpSubject(s *Scope) map[string]any {
	return map[string]any{"pods": map[string]any{
		"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": s.Q.Namespace}},
		"podSelector":       quarantineMatch(s),
	}}
}

// dnsPods are the cluster DNS pods, as a network-policy-api pod peer.
func dnsPods() map[string]any {
	return map[string]any{"pods": map[string]any{
		"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "kube-system"}},
		"podSelector":       map[string]any{"matchLabels": map[string]any{"k8s-app": "kube-dns"}},
	}}
}

// denyAll: ingress from every namespace, egress to every address (networks
// covers pods too); a DNS exception, when allowed, is listed before it.
func denyAll(dns map[string]any) (ingress, egress []any) {
	ingress = []any{map[string]any{"name": "bulkhead-deny", "action": "Deny", "from": []any{map[string]any{"namespaces": map[string]any{}}}}}
	egress = []any{map[string]any{"name": "bulkhead-deny", "action": "Deny", "to": []any{map[string]any{"networks": []any{"0.0.0.0/0", "::/0"}}}}}
	if dns != nil {
		egress = append([]any{dns}, egress...)
	}
	return ingress, egress
}

// anpSpec: priority 0 is evaluated first of all AdminNetworkPolicies
// (v1alpha1: actions Allow/Deny/Pass, ports as portNumber).
func anpSpec(s *Scope, allowDNS bool) map[string]any {
	var dns map[string]any
	if allowDNS {
		dns = map[string]any{
			"name": "bulkhead-allow-dns", "action": "Allow", "to": []any{dnsPods()},
			"ports": []any{
				map[string]any{"portNumber": map[string]any{"protocol": "UDP", "port": int64(53)}},
				map[string]any{"portNumber": map[string]any{"protocol": "TCP", "port": int64(53)}},
			},
		}
	}
	ingress, egress := denyAll(dns)
	return map[string]any{"priority": int64(0), "subject": anpSubject(s), "ingress": ingress, "egress": egress}
}

// cnpSpec is the v1alpha2 ClusterNetworkPolicy at the top of the Admin
// tier: its actions are Accept/Deny/Pass (there is no Allow) and ports are
// per protocol.
func cnpSpec(s *Scope, allowDNS bool) map[string]any {
	var dns map[string]any
	if allowDNS {
		port := map[string]any{"destinationPort": map[string]any{"number": int64(53)}}
		dns = map[string]any{
			"name": "bulkhead-accept-dns", "action": "Accept", "to": []any{dnsPods()},
			"protocols": []any{map[string]any{"udp": port}, map[string]any{"tcp": port}},
		}
	}
	ingress, egress := denyAll(dns)
	return map[string]any{"tier": "Admin", "priority": int64(0), "subject": anpSubject(s), "ingress": ingress, "egress": egress}
}

// ciliumNamespace is the label Cilium gives every endpoint's namespace.
const ciliumNamespace = "k8s:io.kubernetes.pod.namespace"

// ciliumSpec denies all ingress and all egress. Cilium's deny rules win
// over every allow, so with DNS allowed the egress deny names everything
// but the DNS pods' port 53 (endpoints outside kube-system, endpoints in it
// that are not DNS pods, the DNS pods' other ports, and every non-endpoint
// entity), and a plain allow admits DNS itself.
func ciliumSpec(s *Scope, allowDNS bool) map[string]any {
	spec := map[string]any{
		"endpointSelector": quarantineMatch(s),
		"ingressDeny":      []any{map[string]any{"fromEntities": []any{"all"}}},
	}
	if !allowDNS {
		spec["egressDeny"] = []any{map[string]any{"toEntities": []any{"all"}}}
		return spec
	}
	dnsPods := map[string]any{"matchLabels": map[string]any{ciliumNamespace: "kube-system", "k8s-app": "kube-dns"}}
	spec["egress"] = []any{map[string]any{
		"toEndpoints": []any{dnsPods},
		"toPorts":     []any{map[string]any{"ports": []any{map[string]any{"port": "53", "protocol": "ANY"}}}},
	}}
	spec["egressDeny"] = []any{
		map[string]any{"toEntities": []any{"world", "host", "remote-node", "kube-apiserver", "ingress", "init", "health", "unmanaged", "cluster-mesh"}},
		map[string]any{"toEndpoints": []any{
			map[string]any{"matchExpressions": []any{map[string]any{"key": ciliumNamespace, "operator": "NotIn", "values": []any{"kube-system"}}}},
			map[string]any{
				"matchLabels":      map[string]any{ciliumNamespace: "kube-system"},
				"matchExpressions": []any{map[string]any{"key": "k8s-app", "operator": "NotIn", "values": []any{"kube-dns"}}},
			},
		}},
		map[string]any{
			"toEndpoints": []any{dnsPods},
			"toPorts": []any{map[string]any{"ports": []any{
				map[string]any{"port": "1", "endPort": int64(52), "protocol": "ANY"},
				map[string]any{"port": "54", "endPort": int64(65535), "protocol": "ANY"},
			}}},
		},
	}
	return spec
}

// calicoSpec: order 0 is evaluated before every other Calico policy.
func calicoSpec(s *Scope, allowDNS bool) map[string]any {
	egress := []any{map[string]any{"action": "Deny"}}
	if allowDNS {
		dns := func(proto string) map[string]any {
			return map[string]any{"action": "Allow", "protocol": proto, "destination": map[string]any{
				"namespaceSelector": "projectcalico.org/name == 'kube-system'",
				"selector":          "k8s-app == 'kube-dns'",
				"ports":             []any{int64(53)},
			}}
		}
		egress = append([]any{dns("UDP"), dns("TCP")}, egress...)
	}
	return map[string]any{
		"order":    int64(0),
		"selector": fmt.Sprintf("%s == '%s' && projectcalico.org/namespace == '%s'", securityv1alpha1.QuarantineLabel, s.Q.Name, s.Q.Namespace),
		"types":    []any{"Ingress", "Egress"},
		"ingress":  []any{map[string]any{"action": "Deny"}},
		"egress":   egress,
	}
}

// removeDenyLeftovers deletes the cluster-wide deny policies of Quarantines
// no longer live.
func (e *Engine) removeDenyLeftovers(ctx context.Context, live Live) (int, error) {
	flavors, err := e.servedFlavors()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, f := range flavors {
		if f.namespaced {
			continue
		}
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(f.gvk.GroupVersion().WithKind(f.gvk.Kind + "List"))
		if err := e.Reader.List(ctx, list, client.MatchingLabels{securityv1alpha1.ManagedByLabel: securityv1alpha1.ManagedByValue}); err != nil {
			return n, err
		}
		for i := range list.Items {
			l := list.Items[i].GetLabels()
			ok, err := live(ctx, l[QuarantineNamespaceLabel], l[securityv1alpha1.QuarantineLabel])
			if err != nil {
				return n, err
			}
			if ok {
				continue
			}
			if err := ignoreNotFound(e.Client.Delete(ctx, &list.Items[i])); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}
