package ingest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	certutil "k8s.io/client-go/util/cert"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// Server listens for signals; it is a manager Runnable.
type Server struct {
	Addr    string
	Handler http.Handler
	// CertFile and KeyFile are the serving certificate, reloaded when they
	// change; absent, a self-signed one is generated at start.
	CertFile, KeyFile string
	// ClientCAFile enables client-certificate authentication.
	ClientCAFile string
	// Insecure serves plain HTTP (tests, or behind a TLS-terminating mesh).
	Insecure bool
	// Issue, when set and CertFile is not, makes the serving certificate
	// (signed by the CA the manager keeps and publishes for sensors);
	// otherwise a self-signed one is generated.
	Issue func(ctx context.Context) (tls.Certificate, error)
	// MaxConns and MaxConnsPerAddress cap open connections (0: defaults;
	// negative: no cap). MaxHeaderBytes caps request headers (431 beyond).
	MaxConns, MaxConnsPerAddress, MaxHeaderBytes int
	// Advertiser, when set, publishes this replica as the ingest Service's
	// endpoint once it listens (only the leader listens).
	Advertiser *Advertiser
	// BeforeListen, when set, runs before the listener opens: a new leader
	// loads its predecessor's state there (internal/handover).
	BeforeListen func(ctx context.Context)
}

// Defaults of Server's caps: ingestion sees few clients (detectors and one
// sensor per node), each with a few connections and small headers.
const (
	DefaultMaxConns           = 1024
	DefaultMaxConnsPerAddress = 64
	DefaultMaxHeaderBytes     = 16 << 10
)

func orDefault(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// NeedLeaderElection: scores live in the leader's memory, where policies
// are evaluated, so only the leader accepts them.
func (s *Server) NeedLeaderElection() bool { return true }

// Start listens on Addr until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	if s.BeforeListen != nil {
		s.BeforeListen(ctx)
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("ingest listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	// Unauthenticated clients can open connections and send headers: both
	// are capped and timed, so they cannot hold the manager's memory.
	srv := &http.Server{Handler: s.Handler, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: orDefault(s.MaxHeaderBytes, DefaultMaxHeaderBytes),
		BaseContext: func(net.Listener) context.Context { return ctx }}
	ln = LimitConnections(ln, orDefault(s.MaxConns, DefaultMaxConns), orDefault(s.MaxConnsPerAddress, DefaultMaxConnsPerAddress))
	if !s.Insecure {
		cfg, err := s.TLSConfig(ctx)
		if err != nil {
			_ = ln.Close()
			return err
		}
		ln = tls.NewListener(ln, cfg)
	}
	logf.FromContext(ctx).Info("ingestion listening", "address", ln.Addr().String(), "tls", !s.Insecure)
	if s.Advertiser != nil {
		go advertise(ctx, s.Advertiser, ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdown); err != nil {
			return err
		}
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// TLSConfig is the serving configuration: TLS 1.2+, HTTP/1.1 only, and
// client certificates verified against ClientCAFile when given.
func (s *Server) TLSConfig(ctx context.Context) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	if s.CertFile != "" {
		cw, err := certwatcher.New(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("ingest certificate: %w", err)
		}
		go func() {
			if err := cw.Start(ctx); err != nil {
				logf.FromContext(ctx).Error(err, "watching the ingest certificate")
			}
		}()
		cfg.GetCertificate = cw.GetCertificate
	} else if s.Issue != nil {
		cert, err := s.Issue(ctx)
		if err != nil {
			return nil, fmt.Errorf("ingest certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	} else {
		host, _ := os.Hostname()
		certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey(host, []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"})
		if err != nil {
			return nil, fmt.Errorf("generating a self-signed ingest certificate: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if s.ClientCAFile != "" {
		pem, err := os.ReadFile(s.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("ingest client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ingest client CA %s holds no PEM certificate", s.ClientCAFile)
		}
		cfg.ClientCAs = pool
		// Tokens remain valid, so a certificate is optional.
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}
