package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/internal/behavior"
	"github.com/bulkhead-dev/bulkhead/internal/controller/podresponse"
	"github.com/bulkhead-dev/bulkhead/internal/controller/quarantine"
	"github.com/bulkhead-dev/bulkhead/internal/controller/threatpolicy"
	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/exposure"
	"github.com/bulkhead-dev/bulkhead/internal/handover"
	"github.com/bulkhead-dev/bulkhead/internal/ingest"
	"github.com/bulkhead-dev/bulkhead/internal/ingestca"
	"github.com/bulkhead-dev/bulkhead/internal/notify"
	"github.com/bulkhead-dev/bulkhead/internal/provenance"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
	"github.com/bulkhead-dev/bulkhead/internal/sensordeploy"
	"github.com/bulkhead-dev/bulkhead/internal/sensorhub"
)

// detectionFlags configure signal ingestion and the detection pipeline.
type detectionFlags struct {
	bindAddress, advertiseAddress, service, stateSecret, tokenFile, credentialsSecret, certFile, keyFile, clientCAFile string
	insecure                                                                                                           bool
	maxBody                                                                                                            int64
	ratePerCredential, ratePerAddress                                                                                  float64
	burst, maxPods, maxConns, maxConnsPerAddress                                                                       int
	scoreTTL, replayWindow                                                                                             time.Duration
}

func (f *detectionFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&f.bindAddress, "ingest-bind-address", ":8444", "Address signal ingestion listens on (HTTPS unless --ingest-insecure).")
	fs.StringVar(&f.advertiseAddress, "ingest-advertise-address", os.Getenv("POD_IP"), "This replica's IP, published as the one endpoint of the ingest Service (--ingest-service) while it is the leader; default $POD_IP. Empty: nothing is published.")
	fs.StringVar(&f.service, "ingest-service", ingestca.ServiceName, "The ingest Service (no selector) whose EndpointSlice the leader publishes.")
	fs.StringVar(&f.stateSecret, "ingest-state-secret", handover.SecretName, "Secret in the manager namespace where the leader saves fresh scores, streaks and replay ids every few seconds, and a new leader loads them before it listens. Empty: not saved (a failover starts empty).")
	fs.StringVar(&f.tokenFile, "ingest-token-file", "", "Credentials file: one bearer token (or cert:<common name>) a line with detectors=a,b and optional name=, namespaces= and train=true; re-read when it changes. Adds to --ingest-credentials-secret.")
	fs.StringVar(&f.credentialsSecret, "ingest-credentials-secret", ingest.DefaultCredentialsSecret, "Secret in the manager namespace whose key \""+ingest.CredentialsSecretKey+"\" holds ingest credentials (the file's format); watched, so changes apply without restart. Empty: none.")
	fs.StringVar(&f.certFile, "ingest-tls-cert-file", "", "Serving certificate for ingestion (reloaded on change); absent: a self-signed one is generated at start.")
	fs.StringVar(&f.keyFile, "ingest-tls-key-file", "", "Private key of --ingest-tls-cert-file.")
	fs.StringVar(&f.clientCAFile, "ingest-client-ca-file", "", "CA bundle that enables client-certificate authentication for ingestion.")
	fs.BoolVar(&f.insecure, "ingest-insecure", false, "Serve ingestion over plain HTTP (credentials are still required).")
	fs.Int64Var(&f.maxBody, "ingest-max-body-bytes", ingest.DefaultMaxBodyBytes, "Largest request body ingestion accepts (413 beyond).")
	fs.Float64Var(&f.ratePerCredential, "ingest-rate", ingest.DefaultRate, "Requests per second each ingestion credential may make (429 beyond).")
	fs.IntVar(&f.burst, "ingest-burst", ingest.DefaultBurst, "Burst of requests each ingestion credential may make.")
	fs.Float64Var(&f.ratePerAddress, "ingest-rate-per-address", ingest.DefaultAddressRate, "Requests per second each client address (IPv6: /64) may make, checked before authentication (429 beyond, burst twice that); negative disables.")
	fs.IntVar(&f.maxConns, "ingest-max-connections", ingest.DefaultMaxConns, "Open ingestion connections at most; more are closed at once. Negative: no cap.")
	fs.IntVar(&f.maxConnsPerAddress, "ingest-max-connections-per-address", ingest.DefaultMaxConnsPerAddress, "Open ingestion connections per client address at most. Negative: no cap.")
	fs.DurationVar(&f.replayWindow, "ingest-replay-window", ingest.DefaultReplayWindow, "How long an accepted id is remembered so a replay is refused (409); at most 100000 ids are kept.")
	fs.DurationVar(&f.scoreTTL, "score-ttl", detection.DefaultTTL, "How long a detector's score for a pod stays fresh.")
	fs.IntVar(&f.maxPods, "score-max-pods", 100_000, "Pods the score store holds at most (least recently scored dropped first).")
}

// detectionParts are what the per-pod decision and the policy status read
// from detection.
type detectionParts struct {
	Registry  *detection.Registry
	Evaluator *detection.Evaluator
	Triggers  *detection.Triggers
	Pipeline  *detection.Pipeline
	// Store holds the detectors' fresh scores (the evidence records them).
	Store *detection.Store
	// Sensors holds what the node sensors report.
	Sensors *sensorhub.Hub
}

// podNode answers which node a pod runs on, from the manager's cache.
func podNode(c client.Reader) sensorhub.PodNode {
	return func(ctx context.Context, namespace, name string) (string, bool, error) {
		var pod corev1.Pod
		err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &pod)
		if apierrors.IsNotFound(err) {
			return "", false, nil
		}
		if err != nil {
			return "", false, err
		}
		return pod.Spec.NodeName, true, nil
	}
}

// setupDetection builds the pipeline (score store, policy evaluation,
// trigger queue) that obs, when set, and the ingestion server feed, and
// the ingestion server itself. Evaluations are reported to activity.
func setupDetection(mgr ctrl.Manager, namespace string, f detectionFlags, obs *behavior.Observer, activity detection.Activity) (*detectionParts, error) {
	if f.certFile != "" && f.keyFile == "" || f.certFile == "" && f.keyFile != "" {
		return nil, fmt.Errorf("--ingest-tls-cert-file and --ingest-tls-key-file go together")
	}
	store := detection.NewStore(f.scoreTTL, f.maxPods)
	if err := mgr.Add(store); err != nil {
		return nil, err
	}
	// Watch VulnerabilityReports only where Trivy Operator serves them, found
	// out on first use: setup must not need the API server.
	assessor, err := exposure.NewAssessor(&exposure.LazyReports{Mapper: mgr.GetRESTMapper(), Reader: mgr.GetClient()})
	if err != nil {
		return nil, err
	}
	d := &detectionParts{Registry: detection.NewRegistry(), Triggers: detection.NewTriggers(), Store: store}
	d.Evaluator = detection.NewEvaluator(store, mgr.GetClient(), assessor, d.Triggers, activity)
	d.Evaluator.Registry = d.Registry
	// Scores expire with their pod.
	if err := mgr.Add(&detection.PodDeletions{Cache: mgr.GetCache(), Evaluator: d.Evaluator}); err != nil {
		return nil, err
	}
	d.Pipeline = &detection.Pipeline{Registry: d.Registry, Recorder: d.Evaluator}
	if obs != nil {
		d.Pipeline.Model = obs
	}

	auth, err := ingest.NewAuthenticator(f.tokenFile, ctrl.Log.WithName("ingest"))
	if err != nil {
		return nil, err
	}
	if f.credentialsSecret != "" {
		cs, err := kubernetes.NewForConfig(mgr.GetConfig())
		if err != nil {
			return nil, fmt.Errorf("ingest credentials client: %w", err)
		}
		if err := mgr.Add(&ingest.SecretCredentials{Client: cs, Namespace: namespace, Name: f.credentialsSecret, Auth: auth}); err != nil {
			return nil, err
		}
	}
	// Node sensors authenticate with their projected ServiceAccount token
	// and may speak only for their own node's pods.
	d.Sensors = sensorhub.NewHub(podNode(mgr.GetClient()))
	reviewer := &sensorhub.TokenReviewer{Client: mgr.GetClient(), Audience: wire.Audience,
		Username: sensorhub.SensorUsername(namespace, sensordeploy.Name)}
	handler := ingest.NewHandler(ingest.Config{
		Auth: auth, Detection: d.Pipeline, Pods: mgr.GetClient(),
		MaxBodyBytes: f.maxBody, Rate: rate.Limit(f.ratePerCredential), Burst: f.burst, ReplayWindow: f.replayWindow,
		AddressRate: rate.Limit(f.ratePerAddress), AddressBurst: int(2 * max(f.ratePerAddress, 1)),
		Sensors: &ingest.Sensors{Reviewer: reviewer, Hub: d.Sensors},
		// kubectl bulkhead explain reads live scores here with the user's
		// own token: TokenReview, then may they get quarantines there.
		Explain: &ingest.Explain{Viewers: &ingest.Viewers{Client: mgr.GetClient()}, Source: d.Evaluator},
	})
	// Without a certificate file, serve one signed by the CA the manager
	// keeps in its namespace and publishes for sensors to verify.
	// Uncached: the manager's cache would list Secrets cluster-wide, which
	// its namespaced Role does not allow (the start then hangs).
	direct, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return nil, err
	}
	issue := func(ctx context.Context) (tls.Certificate, error) {
		ca, err := ingestca.Ensure(ctx, direct, namespace)
		if err != nil {
			return tls.Certificate{}, err
		}
		return ca.Serving(ingestca.DNSNames(namespace))
	}
	var adv *ingest.Advertiser
	if f.advertiseAddress != "" {
		adv = &ingest.Advertiser{Client: direct, Namespace: namespace, Service: f.service, Address: f.advertiseAddress}
		if _, err := adv.Slice(1); err != nil {
			return nil, fmt.Errorf("--ingest-advertise-address: %w", err)
		}
	}
	srv := &ingest.Server{Advertiser: adv, Addr: f.bindAddress, Handler: handler, Insecure: f.insecure,
		CertFile: f.certFile, KeyFile: f.keyFile, ClientCAFile: f.clientCAFile, Issue: issue,
		MaxConns: f.maxConns, MaxConnsPerAddress: f.maxConnsPerAddress}
	if f.stateSecret != "" {
		keeper := &handover.Keeper{Client: direct, Namespace: namespace, Name: f.stateSecret,
			Holder: handover.Holder{Evaluator: d.Evaluator, Handler: handler}}
		srv.BeforeListen = keeper.Load
		if err := mgr.Add(keeper); err != nil {
			return nil, err
		}
	}
	return d, mgr.Add(srv)
}

// policyFlags configure what policies may do.
type policyFlags struct {
	maxActive      int
	namespaceShare int
}

func (f *policyFlags) bind(fs *flag.FlagSet) {
	fs.IntVar(&f.maxActive, "max-active-quarantines", 100, "Cluster-wide cap on unreleased Quarantines created by policies; 0 disables the cap.")
	fs.IntVar(&f.namespaceShare, "namespace-share", 50, "Percentage (1-100) of --max-active-quarantines the pods of one namespace may hold.")
}

// provenanceKeys is the signing key of the Quarantines the manager makes
// (internal/provenance), loaded on first use from its Secret.
func provenanceKeys(mgr ctrl.Manager, namespace string) *provenance.Keyring {
	return &provenance.Keyring{Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(), Namespace: namespace}
}

// setupPolicies adds the per-pod decision, which turns the triggers of d
// into Quarantines, and the ThreatPolicy status controller, which reports
// activity.
func setupPolicies(mgr ctrl.Manager, namespace string, f policyFlags, d *detectionParts, activity *threatpolicy.Activity, n *notify.Dispatcher, handoff *quarantine.Handoff) error {
	if f.namespaceShare < 1 || f.namespaceShare > 100 {
		return fmt.Errorf("--namespace-share=%d: want a percentage from 1 to 100", f.namespaceShare)
	}
	recorder := n.Recorder(mgr.GetEventRecorder("bulkhead"))
	keys := provenanceKeys(mgr, namespace)
	if err := (&podresponse.Reconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Triggers: d.Triggers, Evaluator: d.Evaluator, Activity: activity,
		Recorder: recorder, ManagerNamespace: namespace, MaxActive: f.maxActive, NamespaceShare: f.namespaceShare, Provenance: keys,
		Handoff: handoff,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	return (&threatpolicy.ThreatPolicyReconciler{
		Client: mgr.GetClient(), Activity: activity, Detectors: d.Registry, Evaluations: d.Evaluator, Recorder: recorder, Provenance: keys,
		Coverage: d.Sensors,
	}).SetupWithManager(mgr)
}

var _ detection.Model = (*behavior.Observer)(nil)
