package sensor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/internal/behavior"
	"github.com/bulkhead-dev/bulkhead/internal/behavior/kubestore"
)

// MergeFunc folds what this node learned (local) into the stored baseline of
// the same key. It must be idempotent (merging the same local twice changes
// nothing more), because a node flushes its cumulative baseline every time
// and reloads the merged one.
type MergeFunc func(stored, local *behavior.Baseline) (*behavior.Baseline, error)

// SharedStore keeps a workload's baseline as one ConfigMap shared by every
// node (kubestore's names and labels, so the manager reads the same objects).
// Save is read-merge-write with the resourceVersion as the guard: a
// concurrent writer makes the update conflict, and the merge is redone on
// what that writer stored.
type SharedStore struct {
	Client    client.Client
	Reader    client.Reader // the API reader: a stale cache would lose merges to conflicts
	Namespace string
	Merge     MergeFunc
	MaxBytes  int

	mu sync.Mutex
	// ends is when each known baseline's learning window closes.
	ends map[behavior.Key]time.Time
}

var _ behavior.Store = (*SharedStore)(nil)

func (s *SharedStore) kube() *kubestore.Store {
	return &kubestore.Store{Client: s.Client, Reader: s.Reader, Namespace: s.Namespace, MaxBytes: s.MaxBytes}
}

// Load implements behavior.Store.
func (s *SharedStore) Load(ctx context.Context, namespace, owner string) ([]*behavior.Baseline, error) {
	bs, err := s.kube().Load(ctx, namespace, owner)
	for _, b := range bs {
		s.noteEnd(b)
	}
	return bs, err
}

func (s *SharedStore) noteEnd(b *behavior.Baseline) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ends == nil {
		s.ends = map[behavior.Key]time.Time{}
	}
	s.ends[b.Key] = b.Started.Add(b.Window)
}

// LearningEnds returns when each baseline this store has seen stops learning.
func (s *SharedStore) LearningEnds() map[behavior.Key]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[behavior.Key]time.Time, len(s.ends))
	for k, v := range s.ends {
		out[k] = v
	}
	return out
}

// Save implements behavior.Store: merge b into the stored baseline of its key.
func (s *SharedStore) Save(ctx context.Context, b *behavior.Baseline) error {
	name := kubestore.Name(b.Key)
	var merged *behavior.Baseline
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		cm := &corev1.ConfigMap{}
		err := s.Reader.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: name}, cm)
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		create := apierrors.IsNotFound(err)
		merged = b
		if !create {
			stored := &behavior.Baseline{}
			if err := stored.UnmarshalBinary(cm.BinaryData[kubestore.DataKey]); err == nil && stored.Key == b.Key {
				if merged, err = s.Merge(stored, b); err != nil {
					return fmt.Errorf("merging baseline %s: %w", b.Key, err)
				}
			} // a corrupt stored baseline is replaced by what this node learned
		}
		data, err := merged.MarshalBinary()
		if err != nil {
			return err
		}
		limit := s.MaxBytes
		if limit <= 0 {
			limit = kubestore.DefaultMaxBytes
		}
		if len(data) > limit {
			return fmt.Errorf("baseline %s encodes to %d bytes, over the %d limit", b.Key, len(data), limit)
		}
		if create {
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.Namespace}}
		}
		if cm.Labels == nil {
			cm.Labels = map[string]string{}
		}
		if cm.Annotations == nil {
			cm.Annotations = map[string]string{}
		}
		cm.Labels[kubestore.LabelManagedBy] = "bulkhead"
		cm.Labels[kubestore.LabelComponent] = "behavior-baseline"
		cm.Labels[kubestore.LabelOwner] = ownerLabel(b.Key.Namespace, b.Key.Owner)
		cm.Annotations[kubestore.AnnoWorkload] = b.Key.String()
		cm.BinaryData = map[string][]byte{kubestore.DataKey: data}
		if create {
			err = s.Client.Create(ctx, cm)
			if apierrors.IsAlreadyExists(err) {
				// Another node created it first: merge into theirs.
				return apierrors.NewConflict(corev1.Resource("configmaps"), name, err)
			}
			return err
		}
		return s.Client.Update(ctx, cm) // conflicts if anyone wrote since the Get
	})
	if err != nil {
		return err
	}
	s.noteEnd(merged)
	return s.prune(ctx, b.Key)
}

// prune deletes all but the newest kubestore.Keep revisions of the workload.
func (s *SharedStore) prune(ctx context.Context, k behavior.Key) error {
	stored, err := s.kube().Load(ctx, k.Namespace, k.Owner)
	if err != nil || len(stored) <= kubestore.Keep {
		return err
	}
	sort.Slice(stored, func(i, j int) bool { return stored[i].Started.After(stored[j].Started) })
	for _, old := range stored[kubestore.Keep:] {
		if old.Key == k {
			continue
		}
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: kubestore.Name(old.Key), Namespace: s.Namespace}}
		if err := s.Client.Delete(ctx, cm); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	return nil
}

// ownerLabel is kubestore's owner label value (unexported there); the
// shared-store test checks kubestore.Load finds what Save wrote.
func ownerLabel(namespace, owner string) string {
	h := sha256.Sum256([]byte(namespace + "/" + owner))
	return hex.EncodeToString(h[:])[:20]
}

// Seed makes sure the store holds a baseline for k before any node's
// observer creates its own: one that starts learning now with the system
// call vocabulary in a fixed order, so every node gives a name the same id
// (the n-gram filter hashes ids) and the nodes' learning can be merged.
// Nodes that seed at once merge into one.
func (s *SharedStore) Seed(ctx context.Context, k behavior.Key, cfg behavior.Config, vocab []string, now time.Time) error {
	bs, err := s.Load(ctx, k.Namespace, k.Owner)
	if err != nil {
		return err
	}
	for _, b := range bs {
		if b.Key == k {
			return nil
		}
	}
	return s.Save(ctx, SeededBaseline(k, cfg, vocab, now))
}

// SeededBaseline is a new baseline whose syscall vocabulary holds vocab in order.
func SeededBaseline(k behavior.Key, cfg behavior.Config, vocab []string, now time.Time) *behavior.Baseline {
	_ = vocab // token ids are hashed: nodes agree without seeding
	return behavior.NewBaseline(k, cfg, now)
}
