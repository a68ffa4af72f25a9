package main

import (
	"flag"
	"fmt"
	"time"

	"golang.org/x/time/rate"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/bulkhead-dev/bulkhead/internal/controller/threatpolicy"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/ingest"
)

// Detection: signal ingestion, policy evaluation and the ThreatPolicy controllers.
func init() {
	var (
		bindAddress, tokenFile, certFile, keyFile, clientCAFile string
		insecure                                                bool
		maxBody                                                 int64
		ratePerCredential                                       float64
		burst, maxActive, maxPods                               int
		scoreTTL, replayWindow                                  time.Duration
	)
	register(component{
		name: "detection",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&bindAddress, "ingest-bind-address", ":8444", "Address signal ingestion listens on (HTTPS unless --ingest-insecure).")
			fs.StringVar(&tokenFile, "ingest-token-file", "", "Credentials file: one bearer token (or cert:<common name>) a line, with optional name=, detectors= and namespaces= bindings; re-read when it changes.")
			fs.StringVar(&certFile, "ingest-tls-cert-file", "", "Serving certificate for ingestion (reloaded on change); absent: a self-signed one is generated at start.")
			fs.StringVar(&keyFile, "ingest-tls-key-file", "", "Private key of --ingest-tls-cert-file.")
			fs.StringVar(&clientCAFile, "ingest-client-ca-file", "", "CA bundle that enables client-certificate authentication for ingestion.")
			fs.BoolVar(&insecure, "ingest-insecure", false, "Serve ingestion over plain HTTP (credentials are still required).")
			fs.Int64Var(&maxBody, "ingest-max-body-bytes", ingest.DefaultMaxBodyBytes, "Largest request body ingestion accepts (413 beyond).")
			fs.Float64Var(&ratePerCredential, "ingest-rate", ingest.DefaultRate, "Requests per second each ingestion credential may make (429 beyond).")
			fs.IntVar(&burst, "ingest-burst", ingest.DefaultBurst, "Burst of requests each ingestion credential may make.")
			fs.DurationVar(&replayWindow, "ingest-replay-window", ingest.DefaultReplayWindow, "How long an accepted id is remembered so a replay is refused (409); at most 100000 ids are kept.")
			fs.DurationVar(&scoreTTL, "score-ttl", detector.DefaultTTL, "How long a detector's score for a pod stays fresh.")
			fs.IntVar(&maxPods, "score-max-pods", 100_000, "Pods the score store holds at most (least recently scored dropped first).")
			fs.IntVar(&maxActive, "max-active-quarantines", 100, "Cluster-wide cap on unreleased Quarantines created by policies; 0 disables the cap.")
		},
		setup: func(mgr ctrl.Manager, opts *Options) error {
			if certFile != "" && keyFile == "" || certFile == "" && keyFile != "" {
				return fmt.Errorf("--ingest-tls-cert-file and --ingest-tls-key-file go together")
			}
			engine, err := threatpolicy.Setup(mgr, threatpolicy.Options{
				ManagerNamespace: opts.ManagerNamespace, ScoreTTL: scoreTTL, MaxPods: maxPods, MaxActiveQuarantines: maxActive,
			})
			if err != nil {
				return err
			}
			auth, err := ingest.NewAuthenticator(tokenFile)
			if err != nil {
				return err
			}
			if tokenFile == "" && clientCAFile == "" {
				setupLog.Info("ingestion has no credentials: every request will be refused (set --ingest-token-file or --ingest-client-ca-file)")
			}
			handler := ingest.NewHandler(ingest.Config{
				Auth: auth, Sink: engine, Behavior: opts.Behavior, Pods: mgr.GetClient(), Registry: engine.Registry,
				MaxBodyBytes: maxBody, Rate: rate.Limit(ratePerCredential), Burst: burst, ReplayWindow: replayWindow,
			})
			return mgr.Add(&ingest.Server{Addr: bindAddress, Handler: handler, Insecure: insecure,
				CertFile: certFile, KeyFile: keyFile, ClientCAFile: clientCAFile})
		},
	})
}
