// Package metrics defines every Prometheus metric Bulkhead exports, registered
// with controller-runtime's registry so they are served on the (authenticated)
// metrics endpoint. Names are part of the product: alerts and the dashboard
// in config/prometheus use them.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	// ActiveQuarantines is the number of unreleased Quarantines by phase.
	ActiveQuarantines = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "bulkhead_active_quarantines",
		Help: "Quarantines not yet released, by namespace and phase.",
	}, []string{"namespace", "phase"})

	// QuarantinesTotal counts Quarantines reaching a phase.
	QuarantinesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulkhead_quarantines_total",
		Help: "Quarantines that reached a phase, by phase and reason.",
	}, []string{"phase", "reason"})

	// ActionsTotal counts containment actions by type and result state.
	ActionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulkhead_actions_total",
		Help: "Containment actions by type and resulting state (Applied, Refused, Failed, Reverted, NotReverted).",
	}, []string{"type", "state"})

	// ActionForbidden counts containment writes the API server refused with
	// Forbidden (a quota, a webhook, missing RBAC): retried with backoff, so
	// a rate above zero is an alert, not a final state.
	ActionForbidden = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulkhead_action_forbidden_total",
		Help: "Containment action writes refused with Forbidden, by action type; they are retried.",
	}, []string{"type"})

	// AdmissionGuardMissing counts hand-made destructive actions refused
	// because the Quarantine admission guard is not installed.
	AdmissionGuardMissing = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulkhead_admission_guard_missing_total",
		Help: "Hand-made destructive actions refused because the Quarantine admission guard (ValidatingAdmissionPolicy and binding) is missing, by action type.",
	}, []string{"type"})

	// TimeToContain measures creation of a Quarantine to phase Contained.
	TimeToContain = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "bulkhead_time_to_contain_seconds",
		Help:    "Seconds from a Quarantine's creation to phase Contained.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	})

	// Scores is the distribution of effective scores evaluated.
	Scores = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "bulkhead_score",
		Help:    "Scores recorded, by detector (effective for the fused score).",
		Buckets: []float64{.1, .2, .3, .4, .5, .6, .7, .8, .9, .95, 1},
	}, []string{"detector"})

	// IngestedEvents counts signals by source and outcome (accepted or the HTTP status class).
	IngestedEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulkhead_ingested_events_total",
		Help: "Ingested signals by source (scores, falco, cloudevents, tetragon, alertmanager, syscalls) and outcome (accepted, or the reason for rejection).",
	}, []string{"source", "outcome"})

	// IngestCredentialErrors is the number of bad entries (or 1 for an
	// unreadable source) in the last load of each credentials origin.
	IngestCredentialErrors = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "bulkhead_ingest_credential_errors",
		Help: "Problems in the last load of the ingest credentials, by origin (file, secret); their entries are refused, the rest are in force.",
	}, []string{"origin"})

	// IngestRefused counts what ingestion refused before a route read it:
	// per-address rate limit, connection caps, unknown paths.
	IngestRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulkhead_ingest_refused_total",
		Help: "Ingestion requests or connections refused before authentication, by reason (RateLimitedAddress, TooManyConnections, NotFound).",
	}, []string{"reason"})

	// ExplainRequests counts requests for a pod's live scores (GET
	// /v1/explain) by outcome: served, or the reason refused
	// (Unauthorized, Forbidden, ...).
	ExplainRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulkhead_explain_requests_total",
		Help: "Requests for a pod's live scores (kubectl bulkhead explain) by outcome: served, or the reason refused (Unauthorized, Forbidden, UnknownPod, ...).",
	}, []string{"outcome"})

	// DetectorLatency measures time spent scoring one event in a detector.
	DetectorLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "bulkhead_detector_latency_seconds",
		Help:    "Seconds a detector took to score one event.",
		Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12),
	}, []string{"detector"})

	// DetectorLastSignal is the Unix time of the last signal per detector (DetectorSilent alert).
	DetectorLastSignal = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "bulkhead_detector_last_signal_timestamp_seconds",
		Help: "Unix time of the last accepted signal per detector.",
	}, []string{"detector"})

	// PolicyBudgetExhausted is 1 while a policy has no budget left (BudgetExhausted alert).
	PolicyBudgetExhausted = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "bulkhead_policy_budget_exhausted",
		Help: "1 while a ThreatPolicy's maxActiveQuarantines budget is exhausted, else 0.",
	}, []string{"policy"})

	// IsolationIneffective is 1 while a Quarantine's IsolationEffective condition is False.
	IsolationIneffective = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "bulkhead_isolation_ineffective",
		Help: "1 while other NetworkPolicies still admit a contained pod, else 0.",
	}, []string{"namespace", "quarantine"})

	// NodesWithoutBehaviorCoverage counts nodes whose sensor never reported,
	// went silent or cannot use BPF (policies weighing behavior are blind there).
	NodesWithoutBehaviorCoverage = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "bulkhead_nodes_without_behavior_coverage",
		Help: "Nodes whose sensor never reported, is silent or has no BPF: the behavior detector sees nothing there.",
	})

	// Node sensors, per node, as their heartbeats report (internal/sensorhub).
	SensorLastHeartbeat = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "bulkhead_sensor_last_heartbeat_timestamp_seconds",
		Help: "When each node's sensor last reported (DetectorSilent alerts on its age).",
	}, []string{"node"})
	SensorBPFReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "bulkhead_sensor_bpf_ready",
		Help: "1 when the node's sensor observes its pods through BPF, 0 when the node has no behaviour coverage.",
	}, []string{"node"})
	SensorReportsRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulkhead_sensor_reports_rejected_total",
		Help: "Sensor reports refused, by reason.",
	}, []string{"reason"})
	SensorDroppedScores = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "bulkhead_sensor_dropped_scores",
		Help: "Scores a node's sensor dropped while the manager was unreachable (as last reported).",
	}, []string{"node"})

	// NotificationsTotal counts notification deliveries by sink and outcome.
	NotificationsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulkhead_notifications_total",
		Help: "Notifications by sink (slack, webhook, cloudevents) and outcome (delivered, failed, dropped).",
	}, []string{"sink", "outcome"})

	// EventsSuppressed counts Events the decision path left out beyond its
	// rate (what they say is in ThreatPolicy status too).
	EventsSuppressed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulkhead_events_suppressed_total",
		Help: "Events not written because a burst exceeded their rate, by reason (WouldQuarantine, CordonCapReached); ThreatPolicy status keeps what they say.",
	}, []string{"reason"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(
		ActiveQuarantines, QuarantinesTotal, ActionsTotal, TimeToContain, Scores,
		IngestedEvents, DetectorLatency, DetectorLastSignal, PolicyBudgetExhausted,
		IsolationIneffective, NotificationsTotal, NodesWithoutBehaviorCoverage,
		SensorLastHeartbeat, SensorBPFReady, SensorReportsRejected, SensorDroppedScores,
		ActionForbidden, AdmissionGuardMissing, IngestCredentialErrors, IngestRefused,
		ExplainRequests, EventsSuppressed,
	)
}
