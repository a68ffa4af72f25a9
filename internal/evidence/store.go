package evidence

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// Labels and annotations of evidence Secrets. They live in the manager
// namespace, so the Quarantine is named rather than owning them: evidence
// must outlive its Quarantine.
const (
	EvidenceLabel            = "security.bulkhead.dev/evidence"
	QuarantineNamespaceLabel = "security.bulkhead.dev/quarantine-namespace"
	QuarantineUIDAnnotation  = "security.bulkhead.dev/quarantine-uid"
	QuarantineNameAnnotation = "security.bulkhead.dev/quarantine-name"
	SHA256Annotation         = "security.bulkhead.dev/sha256"
	// ExpiresAnnotation is set once the Quarantine is gone: the janitor
	// deletes the Secret after it.
	ExpiresAnnotation = "security.bulkhead.dev/evidence-expires-at"
	// DataKey holds the document in the Secret.
	DataKey = "evidence.json"
	// DefaultRetention is how long evidence is kept after its Quarantine is
	// gone (--evidence-retention).
	DefaultRetention = 30 * 24 * time.Hour
)

// Evidence Secrets live in the manager namespace only: a Role there, no
// cluster-wide right to Secrets. list and delete are the janitor's and
// describe's; the pods' Events and logs are read where the pods run.
// +kubebuilder:rbac:groups="",namespace=bulkhead-system,resources=secrets,verbs=get;list;create;patch;delete
// +kubebuilder:rbac:groups="",resources=events,verbs=list
// +kubebuilder:rbac:groups="",resources=pods/log,verbs=get

// SecretName is the evidence Secret of a Quarantine: a hash of namespace,
// name and uid, so names from different namespaces, or a Quarantine
// recreated under the same name, never collide.
func SecretName(q *securityv1alpha1.Quarantine) string {
	h := sha256.Sum256([]byte(q.Namespace + "/" + q.Name + "/" + string(q.UID)))
	return "bulkhead-evidence-" + hex.EncodeToString(h[:10])
}

// Spill writes the full document to the Quarantine's evidence Secret in
// the manager namespace.
func Spill(ctx context.Context, c client.Writer, managerNamespace string, q *securityv1alpha1.Quarantine, raw []byte, sum string) error {
	if managerNamespace == "" {
		return errors.New("no manager namespace to keep evidence in")
	}
	labels := map[string]string{
		securityv1alpha1.ManagedByLabel: securityv1alpha1.ManagedByValue,
		EvidenceLabel:                   "true",
		QuarantineNamespaceLabel:        q.Namespace,
	}
	if len(q.Name) <= 63 {
		labels[securityv1alpha1.QuarantineLabel] = q.Name
	}
	sec := &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name: SecretName(q), Namespace: managerNamespace, Labels: labels,
			Annotations: map[string]string{SHA256Annotation: sum, QuarantineUIDAnnotation: string(q.UID), QuarantineNameAnnotation: q.Name},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{DataKey: raw},
	}
	return kubeutil.ApplyObject(ctx, c, sec)
}

// Decode reads the document of an evidence Secret and checks its digest.
func Decode(sec *corev1.Secret) (Document, error) {
	var d Document
	raw := sec.Data[DataKey]
	if len(raw) == 0 {
		return d, fmt.Errorf("secret %s/%s holds no %s", sec.Namespace, sec.Name, DataKey)
	}
	sum := sha256.Sum256(raw)
	if want := sec.Annotations[SHA256Annotation]; want != "" && want != hex.EncodeToString(sum[:]) {
		return d, fmt.Errorf("secret %s/%s: sha256 %s does not match its annotation %s", sec.Namespace, sec.Name, hex.EncodeToString(sum[:]), want)
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return d, fmt.Errorf("secret %s/%s: %w", sec.Namespace, sec.Name, err)
	}
	return d, nil
}

// Find lists the evidence kept for a Quarantine, newest first: the
// Quarantine may be gone, or have been recreated under its name.
func Find(ctx context.Context, c client.Reader, managerNamespace, namespace, name string) ([]corev1.Secret, error) {
	var list corev1.SecretList
	if err := c.List(ctx, &list, client.InNamespace(managerNamespace),
		client.MatchingLabels{EvidenceLabel: "true", QuarantineNamespaceLabel: namespace}); err != nil {
		return nil, err
	}
	var out []corev1.Secret
	for _, s := range list.Items {
		if s.Annotations[QuarantineNameAnnotation] == name {
			out = append(out, s)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[j].CreationTimestamp.Before(&out[i].CreationTimestamp) })
	return out, nil
}

// Janitor keeps evidence for Retention after its Quarantine is gone: the
// first run that finds the Quarantine gone stamps the expiry, a run after
// it deletes the Secret.
type Janitor struct {
	// Client writes (patch, delete) evidence Secrets.
	Client client.Client
	// Secrets lists evidence Secrets (uncached: the manager watches no
	// Secrets); Quarantines lists Quarantines (the cache).
	Secrets, Quarantines client.Reader
	Namespace            string
	Retention            time.Duration
	Interval             time.Duration
	Now                  func() time.Time
}

// NeedLeaderElection: only the leader deletes.
func (j *Janitor) NeedLeaderElection() bool { return true }

// Start runs until ctx ends.
func (j *Janitor) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("evidence-janitor")
	interval := j.Interval
	if interval <= 0 {
		interval = 10 * time.Minute
	}
	wait.JitterUntilWithContext(ctx, func(ctx context.Context) {
		if n, err := j.RunOnce(ctx); err != nil {
			log.Error(err, "expiring evidence")
		} else if n > 0 {
			log.Info("deleted expired evidence", "secrets", n)
		}
	}, interval, 0.2, true)
	return nil
}

// RunOnce stamps the expiry of evidence whose Quarantine is gone and
// deletes what has expired; it returns how many Secrets it deleted.
func (j *Janitor) RunOnce(ctx context.Context) (int, error) {
	now := time.Now
	if j.Now != nil {
		now = j.Now
	}
	retention := j.Retention
	if retention <= 0 {
		retention = DefaultRetention
	}
	var qs securityv1alpha1.QuarantineList
	if err := j.Quarantines.List(ctx, &qs); err != nil {
		return 0, err
	}
	live := make(map[types.UID]bool, len(qs.Items))
	for i := range qs.Items {
		live[qs.Items[i].UID] = true
	}
	var secs corev1.SecretList
	if err := j.Secrets.List(ctx, &secs, client.InNamespace(j.Namespace), client.MatchingLabels{EvidenceLabel: "true"}); err != nil {
		return 0, err
	}
	deleted := 0
	var errs []error
	for i := range secs.Items {
		s := &secs.Items[i]
		if live[types.UID(s.Annotations[QuarantineUIDAnnotation])] {
			continue
		}
		at, err := time.Parse(time.RFC3339, s.Annotations[ExpiresAnnotation])
		switch {
		case err != nil:
			// Gone (or the stamp is unreadable): the retention starts now.
			patch := client.MergeFrom(s.DeepCopy())
			if s.Annotations == nil {
				s.Annotations = map[string]string{}
			}
			s.Annotations[ExpiresAnnotation] = now().Add(retention).UTC().Format(time.RFC3339)
			errs = append(errs, j.Client.Patch(ctx, s, patch))
		case !now().Before(at):
			err := j.Client.Delete(ctx, s, client.Preconditions{UID: &s.UID})
			if err == nil {
				deleted++
			}
			if !apierrors.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	return deleted, errors.Join(errs...)
}
