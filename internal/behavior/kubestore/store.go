// Package kubestore is the Kubernetes side of the behavior model: baselines
// kept as ConfigMaps in the manager namespace, and pod -> workload resolution.
//
// Why ConfigMaps with binaryData: tenants have no write access to the manager
// namespace, so they cannot poison or delete baselines; a baseline is not a
// credential (a Secret would add encryption-at-rest cost and hide it from
// operators who debug with `kubectl get cm`); binaryData holds the compressed
// encoding as is; one object per workload revision keeps each write small and
// independent. A baseline stores in at most behavior.MaxStoredBytes (20 KiB),
// and a workload keeps one, plus the previous revision's while a rollout
// learns: 5,000 workloads take about 100 MB of etcd at most.
package kubestore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/internal/behavior"
)

// +kubebuilder:rbac:groups="",namespace=bulkhead-system,resources=configmaps,verbs=get;list;watch;create;update;patch;delete

// Labels and annotations on baseline ConfigMaps.
const (
	LabelManagedBy  = "app.kubernetes.io/managed-by"
	LabelComponent  = "app.kubernetes.io/component"
	LabelOwner      = "security.bulkhead.dev/baseline-owner" // hash of namespace/owner (label values are restricted)
	AnnoWorkload    = "security.bulkhead.dev/workload"       // namespace/Kind/name@template-hash, readable
	DataKey         = "baseline"
	DefaultMaxBytes = behavior.MaxStoredBytes
	// Keep is how many revisions' baselines are kept per workload: the
	// current one and, while it learns, the previous one it is scored against.
	Keep = 2
)

// Store keeps baselines in one namespace.
type Store struct {
	Client    client.Client // writes
	Reader    client.Reader // reads (the API reader: loads are rare, no cache of every ConfigMap needed)
	Namespace string
	MaxBytes  int
	Now       func() time.Time // nil: time.Now
}

var _ behavior.Store = (*Store)(nil)

func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])[:20]
}

// Name is the ConfigMap name of a baseline.
func Name(k behavior.Key) string { return "bulkhead-baseline-" + hash(k.String()) }

func ownerLabel(namespace, owner string) string { return hash(namespace + "/" + owner) }

// Load returns the stored baselines of a workload.
func (s *Store) Load(ctx context.Context, namespace, owner string) ([]*behavior.Baseline, error) {
	var list corev1.ConfigMapList
	if err := s.Reader.List(ctx, &list, client.InNamespace(s.Namespace),
		client.MatchingLabels{LabelOwner: ownerLabel(namespace, owner), LabelManagedBy: "bulkhead"}); err != nil {
		return nil, err
	}
	var out []*behavior.Baseline
	for _, cm := range list.Items {
		b := &behavior.Baseline{}
		if err := b.UnmarshalBinary(cm.BinaryData[DataKey]); err != nil {
			// A corrupt baseline is relearned rather than blocking the workload.
			continue
		}
		if b.Key.Namespace == namespace && b.Key.Owner == owner {
			out = append(out, b)
		}
	}
	return out, nil
}

// Save writes a baseline and prunes the workload's older revisions.
func (s *Store) Save(ctx context.Context, b *behavior.Baseline) error {
	data, err := b.MarshalBinary()
	if err != nil {
		return err
	}
	limit := s.MaxBytes
	if limit <= 0 {
		limit = DefaultMaxBytes
	}
	if len(data) > limit {
		return fmt.Errorf("baseline %s encodes to %d bytes, over the %d limit", b.Key, len(data), limit)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: Name(b.Key), Namespace: s.Namespace}}
	err = s.Reader.Get(ctx, client.ObjectKeyFromObject(cm), cm)
	switch {
	case apierrors.IsNotFound(err):
		s.fill(cm, b, data)
		if err := s.Client.Create(ctx, cm); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		s.fill(cm, b, data)
		if err := s.Client.Update(ctx, cm); err != nil {
			return err
		}
	}
	return s.prune(ctx, b)
}

func (s *Store) fill(cm *corev1.ConfigMap, b *behavior.Baseline, data []byte) {
	if cm.Labels == nil {
		cm.Labels = map[string]string{}
	}
	if cm.Annotations == nil {
		cm.Annotations = map[string]string{}
	}
	cm.Labels[LabelManagedBy] = "bulkhead"
	cm.Labels[LabelComponent] = "behavior-baseline"
	cm.Labels[LabelOwner] = ownerLabel(b.Key.Namespace, b.Key.Owner)
	cm.Annotations[AnnoWorkload] = b.Key.String()
	cm.BinaryData = map[string][]byte{DataKey: data}
}

// prune deletes all but the newest Keep baselines of b's workload, and the
// older ones too once the newest has finished learning (nothing is scored
// against them any more).
func (s *Store) prune(ctx context.Context, b *behavior.Baseline) error {
	stored, err := s.Load(ctx, b.Key.Namespace, b.Key.Owner)
	if err != nil || len(stored) <= 1 {
		return err
	}
	sort.Slice(stored, func(i, j int) bool { return stored[i].Started.After(stored[j].Started) })
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	keep := Keep
	if !stored[0].Learning(now()) {
		keep = 1
	}
	for _, old := range stored[min(keep, len(stored)):] {
		if old.Key == b.Key {
			continue
		}
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: Name(old.Key), Namespace: s.Namespace}}
		if err := s.Client.Delete(ctx, cm); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	return nil
}
