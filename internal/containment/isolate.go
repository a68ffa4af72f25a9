package containment

import (
	"context"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// NetworkPolicyName is the Isolate NetworkPolicy of a Quarantine.
func NetworkPolicyName(quarantine string) string { return "bulkhead-" + quarantine }

// ManagedLabels mark what Bulkhead creates for a Quarantine.
func ManagedLabels(quarantine string) map[string]string {
	return map[string]string{
		securityv1alpha1.ManagedByLabel:  securityv1alpha1.ManagedByValue,
		securityv1alpha1.QuarantineLabel: quarantine,
	}
}

// DesiredNetworkPolicySpec denies all ingress and all egress for the selected
// pods, except DNS to the cluster DNS pods when allowDNS is set.
func DesiredNetworkPolicySpec(selector metav1.LabelSelector, allowDNS bool) networkingv1.NetworkPolicySpec {
	spec := networkingv1.NetworkPolicySpec{
		PodSelector: selector,
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
	}
	if allowDNS {
		udp, tcp, port := corev1.ProtocolUDP, corev1.ProtocolTCP, intstr.FromInt32(53)
		spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
			To: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: "kube-system"}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
			}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &port}, {Protocol: &tcp, Port: &port}},
		}}
	}
	return spec
}

func allowDNS(a securityv1alpha1.Action) bool { return a.Isolate != nil && a.Isolate.AllowDNS }

// isolate denies the target's traffic: a NetworkPolicy selecting it, the
// quarantine label on its pods, and third-party deny policies where served.
type isolate struct{}

func (isolate) Traits() Traits { return Traits{Isolating: true} }

func (isolate) Plan(s *Scope, _ securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) {
	st.Resource, st.ResourceAPIVersion = "NetworkPolicy/"+NetworkPolicyName(s.Q.Name), "networking.k8s.io/v1"
}

func (isolate) Apply(ctx context.Context, e *Engine, s *Scope, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	var o Outcome
	name := NetworkPolicyName(s.Q.Name)
	st.Resource, st.ResourceAPIVersion = "NetworkPolicy/"+name, "networking.k8s.io/v1"
	if s.Target == nil {
		// The pod is gone. Once applied, the policy stays until release; never
		// applied (another action removed the pod first), there is nothing
		// left to isolate, and waiting would keep the phase Containing forever.
		if st.State == securityv1alpha1.ActionPending {
			// A NetworkPolicy written before the state was recorded (the
			// manager died, or a later step of that pass failed) makes it
			// Applied, so release deletes it.
			np := &networkingv1.NetworkPolicy{}
			err := e.Reader.Get(ctx, client.ObjectKey{Namespace: s.Q.Namespace, Name: name}, np)
			switch {
			case err == nil && np.Labels[securityv1alpha1.ManagedByLabel] == securityv1alpha1.ManagedByValue:
				st.State, st.Message = securityv1alpha1.ActionApplied, ""
			case err == nil || apierrors.IsNotFound(err):
				st.State, st.Message = securityv1alpha1.ActionRefused, "the target pod is gone: nothing left to isolate"
			default:
				return o, err
			}
		}
		return o, nil
	}
	if !s.isolated {
		var err error
		if o, err = isolateWrites(ctx, e, s, a, st); err != nil {
			return o, err
		}
	}
	wrote, err := e.ensureThirdPartyDeny(ctx, s, a)
	if err != nil {
		return o, err
	}
	o.Changed = o.Changed || wrote
	st.AddedLabels = []string{securityv1alpha1.QuarantineLabel}
	st.State, st.Message = securityv1alpha1.ActionApplied, ""
	return o, nil
}

// Isolate writes the NetworkPolicy and the pod labels, nothing else; the
// third-party denies follow in Apply.
func (isolate) Isolate(ctx context.Context, e *Engine, s *Scope, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	if s.Target == nil {
		return Outcome{}, nil
	}
	o, err := isolateWrites(ctx, e, s, a, st)
	if err == nil {
		s.isolated = true
	}
	return o, err
}

// isolateWrites makes the policy and the pod labels at the same time: each
// isolates only with the other, neither order is safer (a manager that dies
// between them leaves a pass that makes the other), and one after the other
// they cost two round trips before the sensors and the CNI can act.
func isolateWrites(ctx context.Context, e *Engine, s *Scope, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	var o Outcome
	type result struct {
		wrote bool
		err   error
	}
	policy := make(chan result, 1)
	go func() {
		wrote, err := e.ensureNetworkPolicy(ctx, s, a, st.State == securityv1alpha1.ActionPending && !s.IsolatedEarlier)
		policy <- result{wrote, err}
	}()
	var labelErr error
	for i := range s.Target.Pods {
		wrote, err := e.ensurePodLabel(ctx, &s.Target.Pods[i], s.Q.Name)
		if err != nil {
			labelErr = err
			break
		}
		o.Changed = o.Changed || wrote
	}
	pr := <-policy
	o.Changed = o.Changed || pr.wrote
	if pr.err != nil {
		return o, pr.err
	}
	return o, labelErr
}

// ensureNetworkPolicy applies the policy. The first time (pending) it
// applies without reading: apply is idempotent, and the read cost a request
// per containment; later passes read first so an intact policy costs no
// write. That read is from the cache: a stale miss costs one idempotent
// apply, and a change the cache has not seen yet comes with its own watch
// event (the controller owns the policy), which brings another pass.
func (e *Engine) ensureNetworkPolicy(ctx context.Context, s *Scope, a securityv1alpha1.Action, pending bool) (bool, error) {
	name := NetworkPolicyName(s.Q.Name)
	want := DesiredNetworkPolicySpec(podSelectorFor(s), allowDNS(a))
	if !pending {
		have := &networkingv1.NetworkPolicy{}
		err := e.Client.Get(ctx, client.ObjectKey{Namespace: s.Q.Namespace, Name: name}, have)
		switch {
		case err == nil:
			if equality.Semantic.DeepEqual(have.Spec, want) && hasLabels(have.Labels, ManagedLabels(s.Q.Name)) {
				return false, nil
			}
		case !apierrors.IsNotFound(err):
			return false, err
		}
	}
	np := networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.Q.Namespace, Labels: ManagedLabels(s.Q.Name), OwnerReferences: []metav1.OwnerReference{OwnerRef(s.Q)}},
		Spec:       want,
	}
	u, err := kubeutil.ToUnstructured(&np)
	if err != nil {
		return false, err
	}
	// Empty rule lists are sent explicitly: forcing ownership of them
	// removes rules someone added (tampering); an omitted list would keep them.
	spec := u.Object["spec"].(map[string]any)
	if len(want.Egress) == 0 {
		spec["egress"] = []any{}
	}
	spec["ingress"] = []any{}
	return true, kubeutil.Apply(ctx, e.Client, u)
}

// ensurePodLabel puts the quarantine label on a pod. A pod held by another
// Quarantine keeps that label, whose isolation covers it; when that one is
// released and takes its label away, this one's next pass (woken by the
// pod's label change) puts its own.
func (e *Engine) ensurePodLabel(ctx context.Context, pod *corev1.Pod, quarantine string) (bool, error) {
	if _, ok := pod.Labels[securityv1alpha1.QuarantineLabel]; ok {
		return false, nil
	}
	base := pod.DeepCopy()
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[securityv1alpha1.QuarantineLabel] = quarantine
	return true, ignoreNotFound(e.Client.Patch(ctx, pod, client.MergeFrom(base), kubeutil.FieldOwner))
}

func (isolate) Revert(ctx context.Context, e *Engine, s *Scope, _ securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	var o Outcome
	np := &networkingv1.NetworkPolicy{}
	err := e.Reader.Get(ctx, client.ObjectKey{Namespace: s.Q.Namespace, Name: NetworkPolicyName(s.Q.Name)}, np)
	switch {
	case err == nil && np.Labels[securityv1alpha1.ManagedByLabel] == securityv1alpha1.ManagedByValue:
		if err := ignoreNotFound(e.Client.Delete(ctx, np)); err != nil {
			return o, err
		}
		o.Changed = true
	case err != nil && !apierrors.IsNotFound(err):
		return o, err
	}
	wrote, err := e.deleteThirdPartyDeny(ctx, s)
	if err != nil {
		return o, err
	}
	o.Changed = o.Changed || wrote
	// Marker-driven: every pod still carrying this Quarantine's label.
	pods := &corev1.PodList{}
	if err := e.Reader.List(ctx, pods, client.InNamespace(s.Q.Namespace), client.MatchingLabels{securityv1alpha1.QuarantineLabel: s.Q.Name}); err != nil {
		return o, err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		base := p.DeepCopy()
		delete(p.Labels, securityv1alpha1.QuarantineLabel)
		if err := ignoreNotFound(e.Client.Patch(ctx, p, client.MergeFrom(base), kubeutil.FieldOwner)); err != nil {
			return o, err
		}
		o.Changed = true
	}
	st.State, st.Message = securityv1alpha1.ActionReverted, ""
	return o, nil
}

// Leftovers: the NetworkPolicy and namespaced deny policies are owned by
// the Quarantine; cluster-wide deny policies are not.
func (isolate) Leftovers(ctx context.Context, e *Engine, live Live) (int, error) {
	return e.removeDenyLeftovers(ctx, live)
}

// IsolationGaps names the other NetworkPolicies that still admit traffic to
// or from a contained pod: NetworkPolicies are additive, so any rule in
// another policy selecting the pod reopens what Isolate closed.
func (e *Engine) IsolationGaps(ctx context.Context, s *Scope) ([]string, error) {
	if s.Target == nil || len(s.Target.Pods) == 0 {
		return nil, nil
	}
	// From the cache, read-only: an advisory check, re-run at every
	// re-check, and a live list of the namespace per containment made a
	// burst cost O(policies) each.
	list := &networkingv1.NetworkPolicyList{}
	if err := e.Client.List(ctx, list, client.InNamespace(s.Q.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	return AdmittingPolicies(s.Target.Pods, list.Items, NetworkPolicyName(s.Q.Name)), nil
}

// AdmittingPolicies returns, sorted, the policies other than ours that
// select one of the pods and allow some ingress or egress.
func AdmittingPolicies(pods []corev1.Pod, policies []networkingv1.NetworkPolicy, ours string) []string {
	var out []string
	for i := range policies {
		p := &policies[i]
		if p.Name == ours || !admits(p) {
			continue
		}
		for j := range pods {
			if selects(&p.Spec.PodSelector, pods[j].Labels) {
				out = append(out, p.Name)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// admits reports whether a policy allows anything: an ingress rule under an
// Ingress policy type, or an egress rule under Egress.
func admits(p *networkingv1.NetworkPolicy) bool {
	ingress, egress := len(p.Spec.PolicyTypes) == 0, false
	for _, t := range p.Spec.PolicyTypes {
		ingress = ingress || t == networkingv1.PolicyTypeIngress
		egress = egress || t == networkingv1.PolicyTypeEgress
	}
	return (ingress && len(p.Spec.Ingress) > 0) || (egress && len(p.Spec.Egress) > 0)
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// OwnerRef makes the Quarantine the controlling owner of what it creates,
// so namespaced objects go with it.
func OwnerRef(q *securityv1alpha1.Quarantine) metav1.OwnerReference {
	t := true
	return metav1.OwnerReference{
		APIVersion: securityv1alpha1.GroupVersion.String(), Kind: "Quarantine",
		Name: q.Name, UID: q.UID, Controller: &t, BlockOwnerDeletion: &t,
	}
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
