package install

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// The tests in this file are the quarantine-guard's answers to issue 14
// (hostile tenants): a user who may write Quarantines must not be able to
// forge the manager's attribution, release without the release verb, or
// shrink what a Quarantine contains.

// guardNS keeps these Quarantines apart from TestQuarantineGuard's, which
// deletes every Quarantine of its namespace at the end.
const guardNS = "tenant-guard"

// autoReleaseAtAnnotation is internal/policy.AutoReleaseAtAnnotation, spelled
// out as the admission policy spells it.
const autoReleaseAtAnnotation = "security.bulkhead.dev/auto-release-at"

// guardStep is one request and what the guard must answer.
type guardStep struct {
	name    string
	run     func() error
	allowed bool
	message string // part of the denial message
}

// guardUsers are the people of these tests: editor may write Quarantines but
// holds no custom verbs; responder holds the shipped bulkhead-responder role
// (approve and release); manager is the manager's ServiceAccount.
type guardUsers struct {
	editor, responder, manager client.Client
}

// setupGuard installs dist/install.yaml, waits for the guard and for the
// users' bindings, and returns the users of these tests.
func setupGuard(t *testing.T) guardUsers {
	t.Helper()
	installOnce(t)
	mustCreate(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: guardNS}})
	bind(t, "erin", "erin-quarantines", editQuarantines)
	bindRole(t, "frank", "bulkhead-responder")
	// As in TestQuarantineGuard: plain write access, to prove the exemption.
	bind(t, managerUser, "manager-writes-quarantines", editQuarantines)
	bind(t, "guard-probe", "guard-probe-quarantines", editQuarantines)
	for user, verb := range map[string]string{"erin": "patch", "frank": "release", managerUser: "patch", "guard-probe": "create"} {
		waitForAccess(t, user, verb)
	}
	waitForGuard(t)
	return guardUsers{
		editor:    as(t, "erin"),
		responder: as(t, "frank"),
		manager:   as(t, managerUser, "system:serviceaccounts", "system:serviceaccounts:bulkhead-system"),
	}
}

// waitForAccess waits until the API server's RBAC cache lets user do verb
// on Quarantines in guardNS, so a step is never refused by RBAC instead of
// by the guard.
func waitForAccess(t *testing.T, user, verb string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx(t), 100*time.Millisecond, 30*time.Second, true, func(ctx2 context.Context) (bool, error) {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: []string{"system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Group: securityv1alpha1.GroupVersion.Group,
				Resource: "quarantines", Namespace: guardNS, Verb: verb},
		}}
		if err := env.Client.Create(ctx2, sar); err != nil {
			return false, err
		}
		return sar.Status.Allowed, nil
	})
	if err != nil {
		t.Fatalf("%s was never allowed to %s quarantines: %v", user, verb, err)
	}
}

// waitForGuard waits until the API server enforces the quarantine-guard
// policy: a request is refused with one of its own messages (a refusal by
// RBAC, while a fresh binding is not yet seen, does not count).
func waitForGuard(t *testing.T) {
	t.Helper()
	c := as(t, "guard-probe")
	q := guardQuarantine("guard-probe", securityv1alpha1.ActionIsolate)
	q.Annotations = map[string]string{securityv1alpha1.ActorAnnotation: "someone-else"}
	var last error
	err := wait.PollUntilContextTimeout(ctx(t), 200*time.Millisecond, 30*time.Second, true, func(ctx2 context.Context) (bool, error) {
		last = c.Create(ctx2, q.DeepCopy())
		if last == nil {
			_ = env.Client.Delete(ctx2, q.DeepCopy())
			return false, nil
		}
		return strings.Contains(last.Error(), "must be your own user name"), nil
	})
	if err != nil {
		t.Fatalf("the quarantine-guard policy never took effect (last answer: %v): %v", last, err)
	}
}

// runGuardSteps runs steps in order and checks each answer.
func runGuardSteps(t *testing.T, steps []guardStep) {
	t.Helper()
	for _, s := range steps {
		err := s.run()
		switch {
		case s.allowed && err != nil:
			t.Errorf("%s: denied: %v", s.name, err)
		case !s.allowed && err == nil:
			t.Errorf("%s: allowed, want denied", s.name)
		case !s.allowed && !strings.Contains(err.Error(), s.message):
			t.Errorf("%s: denied for the wrong reason (want %q): %v", s.name, s.message, err)
		}
	}
}

func guardQuarantine(name string, actions ...securityv1alpha1.ActionType) *securityv1alpha1.Quarantine {
	q := quarantine(name, actions...)
	q.Namespace = guardNS
	return q
}

// policyQuarantine is a Quarantine as the threatpolicy controller writes it.
func policyQuarantine(name, policy string) *securityv1alpha1.Quarantine {
	q := guardQuarantine(name, securityv1alpha1.ActionIsolate)
	q.Labels = map[string]string{
		securityv1alpha1.ManagedByLabel: securityv1alpha1.ManagedByValue,
		securityv1alpha1.PolicyLabel:    policy,
	}
	q.Annotations = map[string]string{securityv1alpha1.CreatedByPolicyAnnotation: policy}
	q.Spec.Reason = &securityv1alpha1.QuarantineReason{Policy: policy, Policies: []string{policy}, Summary: "score 0.9"}
	return q
}

func createQ(t *testing.T, c client.Client, q *securityv1alpha1.Quarantine) func() error {
	return func() error { return c.Create(ctx(t), q) }
}

// patchQ merge-patches Quarantine name as c, after edit changes a fresh copy.
func patchQ(t *testing.T, c client.Client, name string, edit func(*securityv1alpha1.Quarantine)) func() error {
	return func() error {
		q := &securityv1alpha1.Quarantine{}
		if err := env.Client.Get(ctx(t), client.ObjectKey{Namespace: guardNS, Name: name}, q); err != nil {
			t.Fatalf("get %s: %v", name, err)
		}
		patch := client.MergeFrom(q.DeepCopy())
		edit(q)
		return c.Patch(ctx(t), q, patch)
	}
}

func with(q *securityv1alpha1.Quarantine, edit func(*securityv1alpha1.Quarantine)) *securityv1alpha1.Quarantine {
	edit(q)
	return q
}

const forgedAttribution = "written only by the Bulkhead manager"

// TestTenantCannotForgeManagerAttribution (issue 14 item 1): budgets and the
// cluster cap count Quarantines carrying created-by by spec.reason.policies,
// so only the manager may write its annotations, its policy label and the
// reason.policy/policies of a policy's Quarantine — not at creation, and not
// by adding, changing or removing them later, whatever custom verbs the user
// holds.
func TestTenantCannotForgeManagerAttribution(t *testing.T) {
	u := setupGuard(t)
	setAnnotation := func(k, v string) func(*securityv1alpha1.Quarantine) {
		return func(q *securityv1alpha1.Quarantine) {
			if q.Annotations == nil {
				q.Annotations = map[string]string{}
			}
			q.Annotations[k] = v
		}
	}
	dropAnnotation := func(k string) func(*securityv1alpha1.Quarantine) {
		return func(q *securityv1alpha1.Quarantine) { delete(q.Annotations, k) }
	}
	setLabel := func(k, v string) func(*securityv1alpha1.Quarantine) {
		return func(q *securityv1alpha1.Quarantine) {
			if q.Labels == nil {
				q.Labels = map[string]string{}
			}
			q.Labels[k] = v
		}
	}
	dropLabel := func(k string) func(*securityv1alpha1.Quarantine) {
		return func(q *securityv1alpha1.Quarantine) { delete(q.Labels, k) }
	}
	dueAt := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)

	runGuardSteps(t, []guardStep{
		// Forged at creation: one such Quarantine per missing pod stays
		// unreleased and eats the policy's budget.
		{"an editor cannot create a Quarantine attributed to a policy",
			createQ(t, u.editor, with(guardQuarantine("forged-1", securityv1alpha1.ActionIsolate), setAnnotation(securityv1alpha1.CreatedByPolicyAnnotation, "web"))),
			false, forgedAttribution},
		{"a responder's custom verbs do not allow it either",
			createQ(t, u.responder, policyQuarantine("forged-2", "web")), false, forgedAttribution},
		{"an editor cannot create one with the auto-release-at annotation",
			createQ(t, u.editor, with(guardQuarantine("forged-3", securityv1alpha1.ActionIsolate), setAnnotation(autoReleaseAtAnnotation, dueAt))),
			false, forgedAttribution},
		{"an editor cannot create one with the policy label",
			createQ(t, u.editor, with(guardQuarantine("forged-4", securityv1alpha1.ActionIsolate), setLabel(securityv1alpha1.PolicyLabel, "web"))),
			false, forgedAttribution},
		{"the denial names what to leave out",
			createQ(t, u.editor, with(guardQuarantine("forged-5", securityv1alpha1.ActionIsolate), setLabel(securityv1alpha1.PolicyLabel, "web"))),
			false, "may not carry label security.bulkhead.dev/policy"},
		{"an empty created-by is refused too",
			createQ(t, u.editor, with(guardQuarantine("forged-6", securityv1alpha1.ActionIsolate), setAnnotation(securityv1alpha1.CreatedByPolicyAnnotation, ""))),
			false, forgedAttribution},

		// The manager writes them (it is exempt).
		{"the manager creates a policy's Quarantine", createQ(t, u.manager, policyQuarantine("by-policy", "web")), true, ""},
		{"the manager sets auto-release-at",
			patchQ(t, u.manager, "by-policy", setAnnotation(autoReleaseAtAnnotation, dueAt)), true, ""},
		{"the manager adds a contributing policy", patchQ(t, u.manager, "by-policy", func(q *securityv1alpha1.Quarantine) {
			q.Spec.Reason.Policies = append(q.Spec.Reason.Policies, "db")
		}), true, ""},

		// Changed later, by anyone else.
		{"a responder cannot change created-by",
			patchQ(t, u.responder, "by-policy", setAnnotation(securityv1alpha1.CreatedByPolicyAnnotation, "db")), false, forgedAttribution},
		{"a responder cannot remove created-by",
			patchQ(t, u.responder, "by-policy", dropAnnotation(securityv1alpha1.CreatedByPolicyAnnotation)), false, forgedAttribution},
		{"an editor cannot move auto-release-at",
			patchQ(t, u.editor, "by-policy", setAnnotation(autoReleaseAtAnnotation, time.Now().UTC().Format(time.RFC3339))), false, forgedAttribution},
		{"an editor cannot remove auto-release-at",
			patchQ(t, u.editor, "by-policy", dropAnnotation(autoReleaseAtAnnotation)), false, forgedAttribution},
		{"a responder cannot change the policy label",
			patchQ(t, u.responder, "by-policy", setLabel(securityv1alpha1.PolicyLabel, "db")), false, forgedAttribution},
		{"a responder cannot remove the policy label",
			patchQ(t, u.responder, "by-policy", dropLabel(securityv1alpha1.PolicyLabel)), false, forgedAttribution},
		{"a responder cannot add a policy to reason.policies", patchQ(t, u.responder, "by-policy", func(q *securityv1alpha1.Quarantine) {
			q.Spec.Reason.Policies = append(q.Spec.Reason.Policies, "cache")
		}), false, "spec.reason.policies of a Quarantine made by a ThreatPolicy"},
		{"an editor cannot remove a policy from reason.policies", patchQ(t, u.editor, "by-policy", func(q *securityv1alpha1.Quarantine) {
			q.Spec.Reason.Policies = q.Spec.Reason.Policies[:1]
		}), false, "written only by the Bulkhead manager"},
		{"an editor cannot change reason.policy", patchQ(t, u.editor, "by-policy", func(q *securityv1alpha1.Quarantine) {
			q.Spec.Reason.Policy = "db"
		}), false, "written only by the Bulkhead manager"},
		{"an editor cannot drop the reason", patchQ(t, u.editor, "by-policy", func(q *securityv1alpha1.Quarantine) {
			q.Spec.Reason = nil
		}), false, "written only by the Bulkhead manager"},
		{"an editor cannot attribute a hand-made Quarantine to a policy later", func() error {
			if err := createQ(t, u.editor, guardQuarantine("hand-made", securityv1alpha1.ActionIsolate))(); err != nil {
				return err
			}
			return patchQ(t, u.editor, "hand-made", setAnnotation(securityv1alpha1.CreatedByPolicyAnnotation, "web"))()
		}, false, "this update adds, changes or removes annotation security.bulkhead.dev/created-by"},

		// Everything else stays open: the manager's keys are left alone.
		{"an editor may edit the summary and add an annotation of their own", patchQ(t, u.editor, "by-policy", func(q *securityv1alpha1.Quarantine) {
			if q.Spec.Reason == nil { // only when an earlier step was wrongly allowed
				q.Spec.Reason = &securityv1alpha1.QuarantineReason{}
			}
			q.Spec.Reason.Summary = "looked at by erin"
			setAnnotation("example.com/ticket", "SEC-1")(q)
		}), true, ""},
		{"a hand-made Quarantine may name policies in its reason (budgets ignore it: no created-by)",
			createQ(t, u.editor, with(guardQuarantine("hand-made-reason", securityv1alpha1.ActionIsolate), func(q *securityv1alpha1.Quarantine) {
				q.Spec.Reason = &securityv1alpha1.QuarantineReason{Policies: []string{"web"}, Summary: "by hand"}
			})), true, ""},
		{"a responder releases the policy's Quarantine, naming himself as actor", patchQ(t, u.responder, "by-policy", func(q *securityv1alpha1.Quarantine) {
			setAnnotation(securityv1alpha1.ActorAnnotation, "frank")(q)
			q.Spec.Released = ptr.To(true)
		}), true, ""},
	})
}

// TestTenantCannotCreateReleasedQuarantine (issue 14 item 2b): a Quarantine
// created with released: true starts the cooldown of its target, so creating
// one is a release and needs the release verb.
func TestTenantCannotCreateReleasedQuarantine(t *testing.T) {
	u := setupGuard(t)
	released := func(name string) *securityv1alpha1.Quarantine {
		return with(guardQuarantine(name, securityv1alpha1.ActionIsolate), func(q *securityv1alpha1.Quarantine) {
			q.Spec.Released = ptr.To(true)
		})
	}
	runGuardSteps(t, []guardStep{
		{"an editor cannot create an already released Quarantine", createQ(t, u.editor, released("released-1")), false,
			"creating a Quarantine with spec.released true (it starts the cooldown of its target) needs the verb release"},
		{"an editor may create one with released: false", createQ(t, u.editor, with(guardQuarantine("released-2", securityv1alpha1.ActionIsolate), func(q *securityv1alpha1.Quarantine) {
			q.Spec.Released = ptr.To(false)
		})), true, ""},
		{"a responder (verb release) may create an already released one", createQ(t, u.responder, released("released-3")), true, ""},
	})
}

// TestTenantCanOnlyAddActions (issue 14 item 10): removing an action from
// spec or changing it is not a way to undo containment without the release
// verb; releasing is. Even an admin (holding release) is refused: release
// undoes what was applied, an edit of spec would not. Removing an action is
// refused by the CRD's own rule for everyone, the manager too (it only ever
// adds); changing an action's parameters is the guard's, and the manager,
// which escalates its own Quarantines, is exempt from it.
func TestTenantCanOnlyAddActions(t *testing.T) {
	u := setupGuard(t)
	const grows = "only-grows"
	// Edits by action type, so a wrongly allowed step cannot derail the next.
	without := func(at securityv1alpha1.ActionType) func(*securityv1alpha1.Quarantine) {
		return func(q *securityv1alpha1.Quarantine) {
			q.Spec.Actions = slices.DeleteFunc(q.Spec.Actions, func(a securityv1alpha1.Action) bool { return a.Type == at })
		}
	}
	change := func(at securityv1alpha1.ActionType, edit func(*securityv1alpha1.Action)) func(*securityv1alpha1.Quarantine) {
		return func(q *securityv1alpha1.Quarantine) {
			for i := range q.Spec.Actions {
				if q.Spec.Actions[i].Type == at {
					edit(&q.Spec.Actions[i])
				}
			}
		}
	}
	runGuardSteps(t, []guardStep{
		{"an editor creates an Isolate-only Quarantine", createQ(t, u.editor, guardQuarantine(grows, securityv1alpha1.ActionIsolate)), true, ""},
		{"an editor may add Label", patchQ(t, u.editor, grows, func(q *securityv1alpha1.Quarantine) {
			q.Spec.Actions = append(q.Spec.Actions, securityv1alpha1.Action{Type: securityv1alpha1.ActionLabel,
				Label: &securityv1alpha1.LabelParams{Labels: map[string]string{"incident": "sec-1"}}})
		}), true, ""},
		{"an editor cannot remove Isolate", patchQ(t, u.editor, grows, without(securityv1alpha1.ActionIsolate)), false,
			"spec.actions may only grow"},
		{"a responder cannot remove Label either", patchQ(t, u.responder, grows, without(securityv1alpha1.ActionLabel)), false,
			"release the Quarantine to undo its actions"},
		{"a responder cannot change Isolate's parameters", patchQ(t, u.responder, grows, change(securityv1alpha1.ActionIsolate, func(a *securityv1alpha1.Action) {
			a.Isolate = &securityv1alpha1.IsolateParams{AllowDNS: true}
		})), false, "removes or changes Isolate"},
		{"a responder cannot change Label's labels", patchQ(t, u.responder, grows, change(securityv1alpha1.ActionLabel, func(a *securityv1alpha1.Action) {
			a.Label = &securityv1alpha1.LabelParams{Labels: map[string]string{"incident": "none"}}
		})), false, "removes or changes Label"},
		{"an admin cannot swap the actions for others", patchQ(t, env.Client, grows, func(q *securityv1alpha1.Quarantine) {
			q.Spec.Actions = []securityv1alpha1.Action{{Type: securityv1alpha1.ActionEvict}}
		}), false, "spec.actions may only grow"},
		{"reordering is not a change", patchQ(t, u.editor, grows, func(q *securityv1alpha1.Quarantine) {
			slices.Reverse(q.Spec.Actions)
		}), true, ""},
		{"the manager may change its actions' parameters", patchQ(t, u.manager, grows, change(securityv1alpha1.ActionIsolate, func(a *securityv1alpha1.Action) {
			a.Isolate = &securityv1alpha1.IsolateParams{AllowDNS: true}
		})), true, ""},
		{"not even the manager may remove one", patchQ(t, u.manager, grows, without(securityv1alpha1.ActionLabel)), false, "spec.actions may only grow"},
	})
}

// TestTenantCannotHastenAutoRelease (issue 14 item 11): a timer that
// releases the Quarantine sooner is a release without the verb, so setting
// or shortening autoReleaseAfter (and approvalTimeout, which expires an
// unapproved one) on an existing Quarantine needs release. Lengthening or
// removing one only keeps containment longer and stays open.
func TestTenantCannotHastenAutoRelease(t *testing.T) {
	u := setupGuard(t)
	d := func(s string) *metav1.Duration {
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		return &metav1.Duration{Duration: v}
	}
	autoRelease := func(s string) func(*securityv1alpha1.Quarantine) {
		return func(q *securityv1alpha1.Quarantine) {
			if s == "" {
				q.Spec.AutoReleaseAfter = nil
				return
			}
			q.Spec.AutoReleaseAfter = d(s)
		}
	}
	const timed, untimed, waiting = "timed", "untimed", "waiting"
	const needsRelease = "releases the Quarantine sooner and needs the verb release"
	runGuardSteps(t, []guardStep{
		{"the manager creates a policy's Quarantine that auto-releases after 1h",
			createQ(t, u.manager, with(policyQuarantine(timed, "web"), autoRelease("1h"))), true, ""},
		{"an editor cannot shorten it to 1m", patchQ(t, u.editor, timed, autoRelease("1m")), false,
			"setting or shortening spec.autoReleaseAfter " + needsRelease},
		{"an editor cannot shorten it in other units", patchQ(t, u.editor, timed, autoRelease("59m59s")), false, needsRelease},
		{"an editor may lengthen it to 2h", patchQ(t, u.editor, timed, autoRelease("2h")), true, ""},
		// metav1.Duration always writes Go's form (2h0m0s); a user may write any.
		{"the same duration in other units is not shorter", func() error {
			q := guardQuarantine(timed)
			return u.editor.Patch(ctx(t), q, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"autoReleaseAfter":"120m"}}`)))
		}, true, ""},
		{"a shorter one in other units is", func() error {
			q := guardQuarantine(timed)
			return u.editor.Patch(ctx(t), q, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"autoReleaseAfter":"119m59.5s"}}`)))
		}, false, needsRelease},
		{"an editor may remove it", patchQ(t, u.editor, timed, autoRelease("")), true, ""},
		{"an editor cannot set it again", patchQ(t, u.editor, timed, autoRelease("3h")), false, needsRelease},
		{"a responder (verb release) may set it", patchQ(t, u.responder, timed, autoRelease("1m")), true, ""},

		{"an editor creates a Quarantine without a timer", createQ(t, u.editor, guardQuarantine(untimed, securityv1alpha1.ActionIsolate)), true, ""},
		{"and cannot add one later", patchQ(t, u.editor, untimed, autoRelease("10m")), false, needsRelease},
		{"an editor may create a Quarantine that auto-releases (nothing is released sooner than it says)",
			createQ(t, u.editor, with(guardQuarantine("timed-by-hand", securityv1alpha1.ActionIsolate), autoRelease("10m"))), true, ""},

		{"an editor creates an unapproved Quarantine that expires after 1h",
			createQ(t, u.editor, with(guardQuarantine(waiting, securityv1alpha1.ActionIsolate), func(q *securityv1alpha1.Quarantine) {
				q.Spec.Approved = ptr.To(false)
				q.Spec.ApprovalTimeout = d("1h")
			})), true, ""},
		{"an editor cannot shorten its approvalTimeout", patchQ(t, u.editor, waiting, func(q *securityv1alpha1.Quarantine) {
			q.Spec.ApprovalTimeout = d("1s")
		}), false, "setting or shortening spec.approvalTimeout " + needsRelease},
		{"a responder may", patchQ(t, u.responder, waiting, func(q *securityv1alpha1.Quarantine) {
			q.Spec.ApprovalTimeout = d("1s")
		}), true, ""},
	})
}

// TestTenantCannotWriteQuarantineStatus: the audit trail and the record of
// what was applied (from which release undoes) live in status, which only
// the manager writes: no shipped role for people may write quarantines/status.
// The guard does not need to cover the subresource.
func TestTenantCannotWriteQuarantineStatus(t *testing.T) {
	u := setupGuard(t)
	bindRole(t, "grace", "bulkhead-admin")
	waitForAccess(t, "grace", "approve")
	admin := as(t, "grace")
	const name = "status-forgery"
	if err := u.manager.Create(ctx(t), policyQuarantine(name, "web")); err != nil {
		t.Fatal(err)
	}
	for who, c := range map[string]client.Client{"editor": u.editor, "responder": u.responder, "admin": admin} {
		q := &securityv1alpha1.Quarantine{}
		if err := env.Client.Get(ctx(t), client.ObjectKey{Namespace: guardNS, Name: name}, q); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(q.DeepCopy())
		q.Status.Phase = securityv1alpha1.PhaseReleased
		q.Status.Audit = append(q.Status.Audit, securityv1alpha1.AuditEntry{Time: metav1.Now(), Actor: "bulkhead/auto-release", Event: "Released"})
		err := c.Status().Patch(ctx(t), q, patch)
		if !apierrors.IsForbidden(err) {
			t.Errorf("the %s writing status: got %v, want forbidden", who, err)
		}
	}
}
