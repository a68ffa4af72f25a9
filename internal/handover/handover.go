// Package handover carries the leader's in-memory detection state — fresh
// scores, policy streaks, replay ids and external detector names — to the
// next leader. The leader saves it to a Secret in the manager namespace
// every few seconds when it changed (and once more on a clean shutdown); a
// new leader loads it before it listens for signals.
//
// Why persisted rather than rebuilt from what sensors resend: sensors send
// a score only when it changes meaningfully, external detectors send each
// finding once, and replay ids by definition are not resent, so none of it
// would come back. A Secret because scores carry detectors' reasons.
package handover

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/ingest"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// Creating a Secret cannot be limited by name; the namespace's Role already
// allows it (internal/ingestca).
// +kubebuilder:rbac:groups="",namespace=bulkhead-system,resources=secrets,resourceNames=bulkhead-ingest-state,verbs=get;patch

const (
	// SecretName is the default state Secret (--ingest-state-secret).
	SecretName = "bulkhead-ingest-state"
	// Key holds the gzipped JSON State.
	Key = "state.json.gz"
	// MaxEntries bounds each list saved (scores, streaks, replay ids).
	MaxEntries = 20_000
	// MaxBytes keeps the Secret well under the API server's 1 MiB object
	// limit; beyond it the oldest entries are dropped, halving the lists.
	MaxBytes = 768 << 10
	// DefaultInterval is how often a changed state is saved: what a
	// successor misses is at most the last interval's signals.
	DefaultInterval = 2 * time.Second
)

// State is what is saved.
type State struct {
	Version   int                `json:"v"`
	Detection detection.Snapshot `json:"detection"`
	Replay    []ingest.ReplayID  `json:"replay,omitempty"`
}

// Holder is the state's two owners: the detection pipeline and the
// ingestion handler's replay guard.
type Holder struct {
	Evaluator *detection.Evaluator
	Handler   *ingest.Handler
}

// Keeper saves and loads the state (a leader-only manager Runnable).
type Keeper struct {
	Client    client.Client
	Namespace string
	Name      string
	Holder    Holder
	Interval  time.Duration

	once   sync.Once
	loaded chan struct{}
	last   []byte
}

func (k *Keeper) init() {
	k.once.Do(func() {
		k.loaded = make(chan struct{})
		if k.Name == "" {
			k.Name = SecretName
		}
		if k.Interval <= 0 {
			k.Interval = DefaultInterval
		}
	})
}

// Encode gzips s as JSON, dropping the oldest half of each list until it
// fits MaxBytes.
func Encode(s State) ([]byte, error) {
	s.Version = 1
	for {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		if err := json.NewEncoder(zw).Encode(s); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
		d := &s.Detection
		if buf.Len() <= MaxBytes || len(d.Scores)+len(d.Streaks)+len(s.Replay) == 0 {
			return buf.Bytes(), nil
		}
		d.Scores, d.Streaks, s.Replay = d.Scores[:len(d.Scores)/2], d.Streaks[:len(d.Streaks)/2], s.Replay[:len(s.Replay)/2]
	}
}

// Decode reads what Encode wrote.
func Decode(b []byte) (State, error) {
	var s State
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return s, err
	}
	// Bounded: a corrupt or hostile Secret must not exhaust memory.
	if err := json.NewDecoder(io.LimitReader(zr, 64<<20)).Decode(&s); err != nil {
		return s, err
	}
	if s.Version != 1 {
		return State{}, fmt.Errorf("state version %d, want 1", s.Version)
	}
	return s, nil
}

// Snapshot is the holder's state now.
func (h Holder) Snapshot() State {
	return State{Detection: h.Evaluator.Snapshot(MaxEntries), Replay: h.Handler.ReplayIDs(MaxEntries)}
}

// Restore loads s into the holder.
func (h Holder) Restore(s State) (scores, streaks, replay int) {
	scores, streaks = h.Evaluator.Restore(s.Detection)
	return scores, streaks, h.Handler.RestoreReplayIDs(s.Replay)
}

// Load reads the predecessor's state into the holder (ingest.Server's
// BeforeListen). A missing, unreadable or corrupt Secret is logged and
// ingestion starts without it: availability first.
func (k *Keeper) Load(ctx context.Context) {
	k.init()
	defer close(k.loaded)
	log := logf.FromContext(ctx).WithName("handover")
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var sec corev1.Secret
	err := k.Client.Get(ctx, client.ObjectKey{Namespace: k.Namespace, Name: k.Name}, &sec)
	if apierrors.IsNotFound(err) {
		log.Info("no saved ingest state; starting empty")
		return
	}
	if err != nil {
		log.Error(err, "reading the saved ingest state; starting empty")
		return
	}
	s, err := Decode(sec.Data[Key])
	if err != nil {
		log.Error(err, "the saved ingest state does not decode; starting empty")
		return
	}
	scores, streaks, replay := k.Holder.Restore(s)
	k.last = sec.Data[Key]
	log.Info("loaded the previous leader's ingest state", "scores", scores, "streaks", streaks, "replayIDs", replay)
}

// Start saves the state every Interval when it changed, after Load, until
// ctx ends, and once more then.
func (k *Keeper) Start(ctx context.Context) error {
	k.init()
	log := logf.FromContext(ctx).WithName("handover")
	// Nothing is saved before Load: an empty state would overwrite the
	// predecessor's.
	select {
	case <-ctx.Done():
	case <-k.loaded:
	}
	t := time.NewTicker(k.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if err := k.Save(final); err != nil {
				log.Error(err, "saving the ingest state at shutdown")
			}
			return nil
		case <-t.C:
			if err := k.Save(ctx); err != nil {
				log.Error(err, "saving the ingest state")
			}
		}
	}
}

// Save writes the state when it differs from the last one written or read.
// Before Load it writes nothing.
func (k *Keeper) Save(ctx context.Context) error {
	k.init()
	select {
	case <-k.loaded:
	default:
		return nil
	}
	b, err := Encode(k.Holder.Snapshot())
	if err != nil {
		return err
	}
	if bytes.Equal(b, k.last) {
		return nil
	}
	sec := corev1ac.Secret(k.Name, k.Namespace).WithType(corev1.SecretTypeOpaque).
		WithLabels(map[string]string{"app.kubernetes.io/part-of": "bulkhead", "app.kubernetes.io/component": "ingest-state"}).
		WithData(map[string][]byte{Key: b})
	if err := k.Client.Apply(ctx, sec, kubeutil.FieldOwner, client.ForceOwnership); err != nil {
		return err
	}
	k.last = b
	return nil
}
