package quarantine

import (
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// maxKernelEntries is the API's bound on an action's kernel list.
const maxKernelEntries = 100

// kernelEnforcement records on the Isolate action what the node sensors
// report for the target's pods, and returns it.
func (p *pass) kernelEnforcement(st *securityv1alpha1.ActionStatus) []securityv1alpha1.KernelEnforcement {
	if p.r.Kernel == nil {
		return nil
	}
	var out []securityv1alpha1.KernelEnforcement
	for _, pod := range p.scope.Target.Pods {
		if k, ok := p.r.Kernel.KernelEnforcement(pod.Namespace, pod.Name, p.q.Name); ok {
			k.Message = kubeutil.Truncate(k.Message, 1024)
			out = append(out, k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pod < out[j].Pod })
	if len(out) > maxKernelEntries {
		out = out[:maxKernelEntries]
	}
	st.Kernel = out
	return out
}

// isolationCondition decides IsolationEffective. NetworkPolicies are
// additive, so others admitting the pod (gaps) reopen what Isolate closed,
// unless Bulkhead's own third-party deny, evaluated before every
// NetworkPolicy, is in force (prec.Overriding); a rival third-party policy
// that may allow ahead of that deny counts whatever the NetworkPolicies say.
// The node kernel dropping every target pod's traffic itself overrides all.
func isolationCondition(gaps []string, prec containment.Precedence, kernel []securityv1alpha1.KernelEnforcement, pods int) metav1.Condition {
	enforced := 0
	var notes []string
	for _, k := range kernel {
		if k.Enforced {
			enforced++
		} else {
			notes = append(notes, fmt.Sprintf("%s on %s: %s", k.Pod, k.Node, k.Message))
		}
		if k.Enforced && !k.ConnectionsCut {
			notes = append(notes, fmt.Sprintf("%s: live connections not cut: %s", k.Pod, k.Message))
		}
	}
	overridden := len(gaps) > 0 && len(prec.Overriding) > 0
	var admitting []string
	if !overridden {
		admitting = append(admitting, gaps...)
	}
	admitting = append(admitting, prec.Rivals...)
	inKernel := pods > 0 && enforced == pods
	c := metav1.Condition{Type: securityv1alpha1.ConditionIsolationEffective, Status: metav1.ConditionTrue, Reason: "Isolated",
		Message: "no other NetworkPolicy admits traffic to or from the pod"}
	switch {
	case inKernel && len(admitting) > 0:
		c.Reason = "KernelEnforced"
		c.Message = "the node kernel drops the pod's traffic (node sensor), although other policies still admit it: " + strings.Join(admitting, ", ")
	case inKernel:
		c.Message += "; the node kernel drops it too (node sensor)"
	case len(admitting) > 0:
		c.Status, c.Reason = metav1.ConditionFalse, "OtherPoliciesAdmit"
		c.Message = "NetworkPolicies still admitting traffic: " + strings.Join(admitting, ", ")
		if len(prec.Rivals) > 0 {
			c.Message += " (policies at or before Bulkhead's deny with an allow or pass rule: " + strings.Join(prec.Rivals, ", ") + ")"
		}
	case overridden:
		c.Reason = "DenyOverrides"
		c.Message = "Bulkhead's deny (" + strings.Join(prec.Overriding, ", ") + ") is evaluated before every NetworkPolicy, so " +
			strings.Join(gaps, ", ") + " do not reopen the pod where the network plugin implements that API"
	}
	if len(notes) > 0 {
		c.Message += "; " + strings.Join(notes, "; ")
	}
	c.Message = kubeutil.Truncate(c.Message, kubeutil.MaxMessage)
	return c
}
