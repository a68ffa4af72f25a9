package main

import (
	"fmt"
	"os"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
	"github.com/bulkhead-dev/bulkhead/test/framework"
	"github.com/bulkhead-dev/bulkhead/test/framework/nodekit"
)

// replay posts a recording of a live run's sensor reports as one shop
// pod's node, with the sensor's own kind of token.
type replay struct {
	entries []entry
	next    int
	ingest  framework.Ingest
	// recorded pod and node, mapped to this run's.
	pod, node string
}

// recordedTarget is the pod the recording's highest score is for.
func recordedTarget(entries []entry) (pod, node string, err error) {
	best := -1.0
	for _, e := range entries {
		if e.Report == nil {
			continue
		}
		for _, s := range e.Report.Scores {
			if s.Score > best {
				best, pod, node = s.Score, s.Pod, e.Report.Node
			}
		}
	}
	if pod == "" {
		return "", "", fmt.Errorf("the recording holds no score")
	}
	return pod, node, nil
}

func (d *demo) prepareReplay() error {
	pods, err := d.shopPods(d.cfg.replicas)
	if err != nil {
		return err
	}
	attacked.pod, attacked.node = pods[0].Name, pods[0].Spec.NodeName
	dir, err := os.MkdirTemp("", "bulkhead-demo-replay-")
	if err != nil {
		return err
	}
	d.onExit(func() { _ = os.RemoveAll(dir) })
	id, err := nodekit.MintSensorIdentity(d.ctx, d.cluster.Config, d.install.Namespace, attacked.node, dir)
	if id != nil && id.Anchor != nil {
		d.onExit(func() { _ = nodekit.DeleteAnchor(d.cluster.Kube, id.Anchor) })
	}
	if err != nil {
		return err
	}
	d.replay.ingest = framework.Ingest{URL: d.manager.Ingest.URL, Token: id.IngestToken}
	d.say("recording %s: %d entries of pod %s on %s, replayed as pod %s on %s", d.cfg.recording, len(d.replay.entries), d.replay.pod, d.replay.node, attacked.pod, attacked.node)
	d.say("POST %s with ServiceAccount %s/%s's token, audience %s, bound to pod %s on %s (as the sensor's DaemonSet token)", wire.Path, d.install.Namespace, nodekit.SensorServiceAccount, wire.Audience, id.Anchor.Name, attacked.node)
	return nil
}

// replayUntil posts entries, keeping the recording's pace but at most a
// second between reports, until the mark stop (or the end).
func (d *demo) replayUntil(stop string) error {
	r := &d.replay
	var last int64 = -1
	posted := 0
	defer func() { d.say("POST %s: %d recorded reports accepted", wire.Path, posted) }()
	for ; r.next < len(r.entries); r.next++ {
		e := r.entries[r.next]
		if e.Mark != "" {
			if e.Mark == stop {
				r.next++
				return nil
			}
			if e.Mark == markAttack {
				d.say("— recorded: the attacker opens a reverse shell through the shop's RCE hole —")
			}
			continue
		}
		if last >= 0 {
			gap := min(time.Duration(e.AtMs-last)*time.Millisecond, time.Second)
			select {
			case <-time.After(gap):
			case <-d.ctx.Done():
				return d.ctx.Err()
			}
		}
		last = e.AtMs
		rep := *e.Report
		if len(rep.Enforcement) > 0 && attacked.quarantine == "" {
			// The sensor enforced after it saw the Quarantine: so here.
			if err := d.waitContained(30 * time.Second); err != nil {
				return err
			}
		}
		d.rewrite(&rep)
		d.showReport(rep)
		code, msg, err := r.ingest.PostJSON(d.ctx, wire.Path, rep)
		if err != nil {
			return err
		}
		if code/100 != 2 {
			return fmt.Errorf("POST %s: %d: %s", wire.Path, code, msg)
		}
		posted++
	}
	if stop != "" {
		return fmt.Errorf("the recording has no %q mark", stop)
	}
	return nil
}

// rewrite makes a recorded report this run's: its node, pod, Quarantine
// and times. Scores of other pods are dropped.
func (d *demo) rewrite(rep *wire.Report) {
	now := time.Now().UTC()
	rep.Node, rep.Time = attacked.node, now
	var scores []wire.Score
	for _, s := range rep.Scores {
		if s.Pod == d.replay.pod {
			s.Namespace, s.Pod, s.Time = shopNS, attacked.pod, now
			scores = append(scores, s)
		}
	}
	rep.Scores = scores
	var enf []wire.Enforcement
	for _, e := range rep.Enforcement {
		if e.Pod == d.replay.pod && attacked.quarantine != "" {
			e.Namespace, e.Pod, e.Quarantine, e.Time = shopNS, attacked.pod, attacked.quarantine, now
			enf = append(enf, e)
		}
	}
	rep.Enforcement = enf
}
