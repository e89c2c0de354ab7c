package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/credbroker/credbroker/attest"
	awsattest "github.com/credbroker/credbroker/attest/aws"
	"github.com/credbroker/credbroker/attest/aws/replaydb"
	githubattest "github.com/credbroker/credbroker/attest/github"
	k8sattest "github.com/credbroker/credbroker/attest/kubernetes"
	spiffeattest "github.com/credbroker/credbroker/attest/spiffe"
	unixattest "github.com/credbroker/credbroker/attest/unix"
	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/audit/fleet"
	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/listener"
	"github.com/credbroker/credbroker/policies"
	"github.com/credbroker/credbroker/providers"
	"github.com/credbroker/credbroker/providers/lease"
)

// defaultSocketDrain is the drain_timeout of the socket API's Unix socket
// and of the admin listener: a request in flight may wait on a provider.
const defaultSocketDrain = 30 * time.Second

// loadedConfig is a validated configuration with its policies compiled.
type loadedConfig struct {
	cfg      *Config
	policies *policies.Set
	// acceptRewind is run's --accept-audit-rewind.
	acceptRewind bool
	// policyStamp is the policy files' stamp, taken before they were loaded.
	policyStamp string
	// serving is set once every listener is up: a later failure is a stop,
	// an earlier one a failure to start.
	serving bool
}

// loadAll loads and validates the configuration at path and its policies,
// reporting every problem it can find. self is the broker's uid and gid,
// which `uid: self` and `gid: self` stand for; nil means this process's.
func loadAll(path string, self *policies.Self, override func(*Config)) (*loadedConfig, error) {
	cfg, err := LoadConfig(path)
	if cfg == nil {
		return nil, err
	}
	errs := []error{err}
	if override != nil {
		override(cfg)
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	var set *policies.Set
	var stamp string
	if cfg.Policies != "" {
		stamp = policyStamp(cfg.Policies)
		set, err = loadPoliciesFor(self, cfg.Policies, cfg.Files)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &loadedConfig{cfg: cfg, policies: set, policyStamp: stamp}, nil
}

func (c *cli) run(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	configPath := fs.String("config", "", "configuration file or directory (required)")
	override := overrideFlags(fs)
	acceptRewind := fs.Bool("accept-audit-rewind", false, "start although the audit log ends before (or no longer holds) the newest head this install signed; recorded in the log")
	if _, err := c.parse(fs, args); err != nil {
		return exitUsage
	}
	if *configPath == "" {
		fmt.Fprintln(c.stderr, "credbroker run: --config is required")
		return exitUsage
	}
	lc, err := loadAll(*configPath, nil, override) // nil: the broker is this process
	if err != nil {
		fmt.Fprintf(c.stderr, "credbroker: cannot start: %v\n", err)
		return 1
	}
	log := newLogger(c.stderr, lc.cfg.Log)
	for _, w := range lc.policies.Warnings() {
		log.Warn("policy warning", "position", fmt.Sprintf("%s:%d", w.File, w.Line), "warning", w.Message)
	}
	if lc.policies.Len() == 0 {
		log.Warn("no policies loaded: every request is denied, and /readyz is not ready, until a policy file holds one", "path", lc.cfg.Policies)
	}
	tuneGC(lc.cfg, log)
	checkFDLimit(lc.cfg, log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lc.acceptRewind = *acceptRewind
	if err := serve(ctx, lc, log); err != nil {
		if !lc.serving {
			// Besides the structured log, one plain line a person reads.
			fmt.Fprintf(c.stderr, "credbroker: cannot start: %v\n", err)
		}
		if errors.Is(err, audit.ErrRewound) {
			log.Error("credbroker refused to start: the audit log lost rows it had signed", "error", err,
				"remedy", "restore the log (and its head file) from a backup, or run with --accept-audit-rewind to continue from what is left; the override is recorded in the log")
			return 1
		}
		log.Error("credbroker stopped", "error", err)
		return 1
	}
	return 0
}

// overrideFlags adds to fs the flags with which run (and doctor, which
// checks what run would use) override the file: --socket, --audit-db,
// --checkpoint and --admin. It returns the function that applies them.
func overrideFlags(fs *flag.FlagSet) func(*Config) {
	socket := fs.String("socket", "", "socket API path (overrides the file)")
	auditDB := fs.String("audit-db", "", "audit database path (overrides the file)")
	checkpoint := fs.String("checkpoint", "", "signed checkpoint file (overrides the file)")
	admin := fs.String("admin", "", `admin listener address (overrides the file; "off" turns it off)`)
	return func(cfg *Config) {
		if *socket != "" {
			cfg.Socket = *socket
		}
		if *auditDB != "" {
			cfg.Audit.Path = *auditDB
		}
		if *checkpoint != "" {
			cfg.Audit.Checkpoint.File = *checkpoint
		}
		if *admin == "off" {
			off := ""
			cfg.Admin = &off
		} else if *admin != "" {
			cfg.Admin = admin
		}
	}
}

// GC defaults; see tuneGC.
const (
	gcPercent = 200
	// gcBaseHeap allows for the broker's live heap without connections
	// (about 2 MiB for the quickstart: policies, CEL programs, metrics, the
	// audit writer), with room for large policy sets and key sets.
	gcBaseHeap = 32 << 20
	// gcConnHeap allows for one open connection. An idle keep-alive
	// connection on the socket API holds about 18 KiB (measured: 10 KiB of
	// heap — the server's 4 KiB bufio reader and writer and the
	// connection's state — and an 8 KiB goroutine stack); one mid-request
	// may also hold its body (up to 64 KiB) and header block (16 KiB), and
	// TLS adds its record buffers.
	gcConnHeap = 128 << 10
	// gcHeadroom is how many times the largest live heap the configuration
	// allows the soft memory limit is.
	gcHeadroom = 2
)

// tuneGC sets the collector's pace. GOGC=200 trades some memory for CPU: a
// decision allocates a few KiB that die young, and the default GOGC=100
// collects often enough to cost several percent of throughput under load,
// while 400 (the earlier default) held 8 MiB more resident under load for
// a difference in CPU per decision lost in the noise (measured at 32
// clients: 40 against 47 MiB peak).
//
// The soft memory limit bounds the heap by configuration, and must never
// sit below the live heap: there the collector runs continuously (a fixed
// 40 MiB limit once burnt 1.1 cores on 5,000 idle connections and made
// every request 3.5× slower). So the limit is derived from the connection
// caps: gcHeadroom × (gcBaseHeap + gcConnHeap per connection the listeners
// may hold) — 324 MiB with the defaults, while max_connections idle
// connections hold about 18 MiB. Even with every connection held, the
// collector then has at least as much room between cycles as there is
// live heap; below the limit, GOGC paces it. GOGC and GOMEMLIMIT in the
// environment take precedence (set GOMEMLIMIT below a container's memory
// limit, never below the live heap).
func tuneGC(cfg *Config, log *slog.Logger) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit(cfg))
	}
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/gomemlimit:bytes"}}
	metrics.Read(s)
	log.Info("garbage collector", "gogc", s[0].Value.Uint64(), "memory_limit", s[1].Value.Uint64())
}

// memoryLimit is the default soft memory limit for cfg's connection caps:
// the socket API's and each listener's.
func memoryLimit(cfg *Config) int64 {
	conns := int64(*cfg.MaxConnections) * int64(1+len(cfg.Listeners))
	if *cfg.Admin != "" {
		conns += adminMaxConnections
	}
	if conns > (math.MaxInt64/gcHeadroom-gcBaseHeap)/gcConnHeap {
		return math.MaxInt64 // no limit
	}
	return gcHeadroom * (gcBaseHeap + gcConnHeap*conns)
}

// Open files the broker holds: fdsBase for its own (the audit database,
// WAL and shared memory, listeners, the replay store, key and policy files,
// with room), and per connection its socket and what the unix attestor
// holds of the peer from accept to close: on the socket API its pidfd,
// /proc/PID directory and cgroup file; on an injection listener its pidfd
// and /proc/PID directory (a TCP caller held after its first attestation),
// plus the connection to the upstream that a proxy or database session
// opens.
const (
	fdsBase            = 64
	fdsPerSocketConn   = 4
	fdsPerListenerConn = 4
)

// fdsNeeded is how many files the broker may hold open when every
// listener is at its connection cap.
func fdsNeeded(cfg *Config) uint64 {
	conns := uint64(*cfg.MaxConnections)
	n := fdsBase + fdsPerSocketConn*conns + fdsPerListenerConn*conns*uint64(len(cfg.Listeners))
	if *cfg.Admin != "" {
		n += adminMaxConnections
	}
	return n
}

// checkFDLimit warns when the open-file limit is below what the connection
// caps let the broker hold: accepting would then fail (EMFILE) before the
// caps are reached. Go raises the soft limit to the hard one at start.
func checkFDLimit(cfg *Config, log *slog.Logger) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return
	}
	if need := fdsNeeded(cfg); uint64(rl.Cur) < need {
		log.Warn("the open-file limit is below what the connection caps can hold; connections past it are refused by the kernel",
			"limit", rl.Cur, "needed", need, "remedy", "raise the limit (systemd LimitNOFILE=, ulimit -n, the container runtime's nofile) or lower max_connections")
	}
}

func newLogger(w interface{ Write([]byte) (int, error) }, lc LogConfig) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(lc.Level))
	opts := &slog.HandlerOptions{Level: level}
	if lc.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// serve runs the broker until ctx is done, then drains in-flight requests,
// flushes the audit log and returns.
func serve(ctx context.Context, lc *loadedConfig, log *slog.Logger) (err error) {
	cfg := lc.cfg
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Every long-lived piece runs in g, in stages: the audit writer first,
	// then what writes to it beside the requests (the lease manager), then
	// the reloader, then the listeners. Stopping goes the other way, each
	// stage joined before the next: listeners drain while the lease manager
	// and the audit writer still commit. Resources are closed after g has
	// stopped, newest first.
	g := newGroup()
	var cleanup []func()
	defer func() {
		if stopErr := g.stop(); err == nil {
			err = stopErr
		}
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}()

	alog, err := audit.Open(ctx, audit.Config{
		Path:         cfg.Audit.Path,
		KeyFile:      cfg.Audit.KeyFile,
		HeadFile:     cfg.Audit.HeadFile,
		AcceptRewind: lc.acceptRewind,
		BusyTimeout:  time.Duration(cfg.Audit.BusyTimeout),
		MinRetention: time.Duration(cfg.Audit.MinRetention),
		Checkpoint:   audit.CheckpointConfig{File: cfg.Audit.Checkpoint.File, Interval: time.Duration(cfg.Audit.Checkpoint.Interval)},
		Logger:       log.With("component", "audit"),
	})
	if err != nil {
		return err
	}
	cleanup = append(cleanup, func() { alog.Close() })
	g.stage("audit").run("audit log", alog.Run)
	if fc := cfg.Audit.Forward.Postgres; fc != nil {
		// Beside the log, never in a decision's way; stopped after the
		// listeners drained, before the log's final rows (sent at the next
		// start).
		fcfg := *fc
		fcfg.Source, fcfg.Logger, fcfg.Registerer = cfg.Audit.Path, log.With("component", "audit-forward"), reg
		fwd, err := fleet.NewForwarder(fcfg)
		if err != nil {
			return err
		}
		g.stage("forward").run("audit forwarder", fwd.Run)
	}

	peer, err := unixattest.New(cfg.Attestors.Unix.config(log.With("component", "attest")))
	if err != nil {
		return err
	}
	// The lease manager, when a provider mints credentials, writes
	// lifecycle rows.
	var leases *lease.Manager
	installID := ""
	if cfg.mintsCredentials() {
		store, err := lease.OpenStore(ctx, cfg.Leases.Store)
		if err != nil {
			return err
		}
		cleanup = append(cleanup, func() { store.Close() })
		installID = store.InstallID()
		if leases, err = lease.New(lease.Config{Store: store, Audit: alog, RefreshAt: cfg.Leases.RefreshAt, Logger: log.With("component", "leases"), Registerer: reg}); err != nil {
			return err
		}
	}
	built, err := buildProviders(cfg, leases, installID, log)
	if err != nil {
		return err
	}
	cleanup = append(cleanup, built.close) // after the lease manager's last revocation
	state := g.stage("state")
	if leases != nil {
		state.run("lease manager", leases.Run)
		state.run("upstream check", func(ctx context.Context) error {
			pingUpstreams(ctx, built.pingers, log)
			<-ctx.Done()
			return nil
		})
	}
	evidence, err := buildAttestors(ctx, cfg, log)
	if err != nil {
		return err
	}
	if r := evidence.replay; r != nil {
		cleanup = append(cleanup, func() { r.Close() }) // after the listeners drained
	}
	if sp := evidence.spiffe; sp != nil {
		cleanup = append(cleanup, func() { sp.Close() })
		state.run("spiffe bundles", sp.Run)
	}
	b, err := broker.New(broker.Config{
		Peer:          peer,
		Tokens:        evidence.tokens,
		Certs:         certAttestor(evidence.spiffe),
		AWS:           evidence.aws,
		Ambient:       evidence.ambient,
		TokenCacheTTL: cfg.Attestors.tokenCacheTTL(),
		Credentials:   built.creds,
		Kinds:         built.kinds,
		Policies:      lc.policies,
		Audit:         alog,
		Registerer:    reg,
		Logger:        log,
	})
	if err != nil {
		return err
	}

	// Reloads are wired before the socket exists: a SIGHUP sent as soon as
	// it answers must reload, not kill, and an edit made since the policies
	// were loaded must be seen.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	cleanup = append(cleanup, func() { signal.Stop(hup) })
	trigger := make(chan struct{}, 1)
	control := g.stage("control")
	control.run("signals", func(ctx context.Context) error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-hup:
				select {
				case trigger <- struct{}{}:
				default:
				}
			}
		}
	})
	control.run("policy reloader", (&broker.Reloader{
		Broker:  b,
		Load:    func() (*policies.Set, error) { return loadPolicies(cfg.Policies, cfg.Files) },
		Stamp:   func() string { return policyStamp(cfg.Policies) },
		Trigger: trigger,
		Initial: lc.policyStamp,
		Logger:  log,
	}).Run)

	listeners := g.stage("listeners")
	mode, _ := cfg.socketMode()
	gid, _ := cfg.socketGID() // both checked by Validate
	ln, err := broker.ListenUnix(cfg.Socket, mode, gid)
	if err != nil {
		return err
	}
	ours, _ := os.Lstat(cfg.Socket)
	cleanup = append(cleanup, func() { removeSocket(cfg.Socket, ln, ours) })
	srv := b.NewSocketServer(log)
	conns := broker.NewConnMetrics(reg)
	// Each read records who wrote it, so the writer of each request is
	// the one attested.
	pln, err := peer.Listen(ln)
	if err != nil {
		return err
	}
	lim, err := broker.LimitListener(pln, srv, broker.LimitConfig{Name: broker.ListenerSocket, Max: *cfg.MaxConnections, Metrics: conns})
	if err != nil {
		return err
	}
	listeners.run("socket API", serveHTTP(srv, lim, cfg.socketDrain()))

	for _, l := range cfg.Listeners {
		kind := listenerKinds[l.Kind]
		if kind.build == nil {
			continue // socket_api, below
		}
		network, address := l.Listener.Network()
		name := l.Kind + " listener " + address
		r, err := kind.build(l.Listener, b, listener.WithLogger(log.With("listener", l.Kind, "listen", address)),
			listener.WithConnLimit(broker.LimitConfig{Name: kind.conns, Max: *cfg.MaxConnections, Metrics: conns}))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		ln, closeLn, err := listen(network, address, cfg, peer)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		cleanup = append(cleanup, closeLn)
		listeners.run(name, func(ctx context.Context) error { return r.Run(ctx, ln) })
		if network == "tcp" {
			address = ln.Addr().String() // the port chosen for :0
		}
		log.Info(l.Kind+" listening", "addr", address, "credential", kind.credential(l.Listener))
	}
	for _, l := range cfg.Listeners {
		sa, ok := l.Listener.(*broker.SocketAPIConfig)
		if !ok {
			continue
		}
		mtlsSrv := b.NewSocketServer(log)
		mln, err := listenMTLS(sa, evidence.spiffe, func(ln net.Listener) (net.Listener, error) {
			return broker.LimitListener(ln, mtlsSrv, broker.LimitConfig{Name: broker.ListenerMTLS, Max: *cfg.MaxConnections, Metrics: conns})
		})
		if err != nil {
			return err
		}
		listeners.run("mtls listener "+sa.Listen, serveHTTP(mtlsSrv, mln, sa.DrainTimeout.Or()))
		log.Info("mtls listening", "addr", mln.Addr().String())
	}

	if *cfg.Admin != "" {
		aln, err := net.Listen("tcp", *cfg.Admin)
		if err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
		adminSrv := &http.Server{
			Handler: broker.AdminHandler(reg, map[string]broker.Health{
				"audit":    alog.Healthy,
				"policies": b.PoliciesHealth,
			}),
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second, // a scrape of /metrics
			IdleTimeout:       time.Minute,
		}
		alim, err := broker.LimitListener(aln, adminSrv, broker.LimitConfig{Name: broker.ListenerAdmin, Max: adminMaxConnections, Metrics: conns})
		if err != nil {
			aln.Close()
			return err
		}
		listeners.run("admin listener", serveHTTP(adminSrv, alim, cfg.socketDrain()))
		log.Info("admin listening", "addr", aln.Addr().String())
	}

	lc.serving = true
	log.Info("credbroker serving", "socket", cfg.Socket, "audit", cfg.Audit.Path,
		"policies", lc.policies.Len(), "credentials", strings.Join(sortedKeys(built.creds), ","), "version", readBuildInfo().Version)

	select {
	case <-ctx.Done():
		log.Info("shutting down: draining in-flight requests")
	case <-g.Failed():
		log.Error("shutting down: a part of the broker stopped", "error", g.stop())
	}
	if err := g.stop(); err != nil {
		return err
	}
	log.Info("credbroker stopped")
	return nil
}

// evidence holds the attestors beyond unix.
type evidence struct {
	tokens  []broker.TokenRoute
	aws     broker.AWSAttestor
	ambient func() (string, error)
	spiffe  *spiffeattest.Attestor // runs in the background, closed at shutdown
	replay  *replaydb.DB           // the aws attestor's used signatures, closed at shutdown
}

// buildAttestors creates the configured attestors beyond unix.
func buildAttestors(ctx context.Context, cfg *Config, log *slog.Logger) (evidence, error) {
	var ev evidence
	logFor := func(method string) *slog.Logger { return log.With("component", "attest", "method", method) }
	if k := cfg.Attestors.Kubernetes; k != nil {
		c := k.config()
		c.Logger = logFor(attest.MethodKubernetes)
		att, err := k8sattest.New(ctx, *c)
		if err != nil {
			return ev, ConfigError{cfg.pos("attestors.kubernetes"), err.Error()}
		}
		ev.tokens = append(ev.tokens, broker.TokenRoute{Method: attest.MethodKubernetes, Issuer: att.Issuer(), Attestor: att})
	}
	if g := cfg.Attestors.GitHub; g != nil {
		c := g.config()
		c.Logger = logFor(attest.MethodGitHub)
		att, err := githubattest.New(ctx, *c)
		if err != nil {
			return ev, ConfigError{cfg.pos("attestors.github"), err.Error()}
		}
		ev.tokens = append(ev.tokens, broker.TokenRoute{Method: attest.MethodGitHub, Issuer: att.Issuer(), Attestor: att})
	}
	if sp := cfg.Attestors.SPIFFE; sp != nil {
		c := sp.config()
		c.Logger = logFor(attest.MethodSPIFFE)
		att, err := spiffeattest.New(ctx, c)
		if err != nil {
			return ev, ConfigError{cfg.pos("attestors.spiffe"), err.Error()}
		}
		ev.spiffe = att
		ev.tokens = append(ev.tokens, broker.TokenRoute{Method: attest.MethodSPIFFE, SubjectPrefix: "spiffe://", Attestor: att})
	}
	if a := cfg.Attestors.AWS; a != nil {
		c := a.config()
		c.Logger = logFor(attest.MethodAWS)
		replay, err := replaydb.Open(ctx, replaydb.Config{Path: a.ReplayDB})
		if err != nil {
			return ev, ConfigError{cfg.pos("attestors.aws.replay_db"), err.Error()}
		}
		c.Replay = replay
		att, err := awsattest.New(c)
		if err != nil {
			replay.Close()
			return ev, ConfigError{cfg.pos("attestors.aws"), err.Error()}
		}
		ev.aws, ev.replay = awsAdapter{att}, replay
	}
	if a := cfg.Attestors.Ambient; a != nil {
		ev.ambient = (&ambientToken{path: a.TokenFile}).Token
	}
	return ev, nil
}

// certAttestor returns the spiffe attestor as the broker's certificate
// attestor, or nil (not a typed nil) without one.
func certAttestor(sp *spiffeattest.Attestor) broker.CertAttestor {
	if sp == nil {
		return nil
	}
	return sp
}

// listenMTLS opens the mTLS listener: client X.509-SVIDs of the trust
// domain are required and verified in the handshake, then attested by the
// broker from the verified chain. limit wraps the TCP listener beneath TLS,
// so that the server still sees TLS connections.
func listenMTLS(sa *broker.SocketAPIConfig, att *spiffeattest.Attestor, limit func(net.Listener) (net.Listener, error)) (net.Listener, error) {
	tlsCfg := att.TLSConfig()
	if sa.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(sa.CertFile, sa.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mtls listener: %w", err)
		}
		tlsCfg.Certificates, tlsCfg.GetCertificate = []tls.Certificate{cert}, nil
	}
	if len(tlsCfg.Certificates) == 0 && tlsCfg.GetCertificate == nil && tlsCfg.GetConfigForClient == nil {
		return nil, errors.New("mtls listener: no server certificate")
	}
	ln, err := net.Listen("tcp", sa.Listen)
	if err != nil {
		return nil, fmt.Errorf("mtls listener: %w", err)
	}
	lim, err := limit(ln)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return tls.NewListener(lim, tlsCfg), nil
}

// awsAdapter decodes the aws_iam body for the AWS attestor.
type awsAdapter struct{ a *awsattest.Attestor }

func (w awsAdapter) AttestAWS(ctx context.Context, signed json.RawMessage) (attest.Identity, error) {
	r, err := awsattest.ParseRequest(signed)
	if err != nil {
		return attest.Identity{}, &attest.Error{Method: attest.MethodAWS, Reason: "malformed aws_iam evidence", Err: err}
	}
	return w.a.Attest(ctx, r)
}

// builtProviders are the configured credentials' providers.
type builtProviders struct {
	creds   map[string]broker.Provider // by credential name, minting ones under the lease manager
	kinds   map[string]string          // provider key by credential name, for the audit log
	pingers map[string]providers.Pinger
	closers []io.Closer // providers holding connections
}

// close closes the providers that hold connections.
func (b *builtProviders) close() {
	for _, c := range b.closers {
		_ = c.Close()
	}
}

// buildProviders creates one provider per configured credential; those
// that mint credentials are put under the lease manager m (with m nil, as
// for check, they are validated only: nothing is built or contacted).
func buildProviders(cfg *Config, m *lease.Manager, installID string, log *slog.Logger) (*builtProviders, error) {
	b := &builtProviders{creds: map[string]broker.Provider{}, kinds: map[string]string{}, pingers: map[string]providers.Pinger{}}
	var errs []error
	for i, c := range cfg.Credentials {
		kind, ok := providerKinds[c.Kind]
		if !ok || c.Provider == nil {
			continue // Validate has reported it
		}
		if kind.managed && m == nil {
			continue
		}
		key := fmt.Sprintf("credentials.%d.%s", i, c.Kind)
		p, err := kind.build(c.Provider, buildContext{name: c.Name, ttl: time.Duration(c.TTL), installID: installID, log: log.With("component", "providers")})
		if err != nil {
			errs = append(errs, ConfigError{cfg.pos(key), err.Error()})
			continue
		}
		if cl, ok := p.(io.Closer); ok {
			b.closers = append(b.closers, cl)
		}
		if pi, ok := p.(providers.Pinger); ok {
			b.pingers[c.Name] = pi
		}
		if kind.managed {
			if p, err = m.Add(c.Name, p); err != nil {
				errs = append(errs, ConfigError{cfg.pos(key), err.Error()})
				continue
			}
		}
		b.creds[c.Name], b.kinds[c.Name] = p, c.Kind
	}
	if err := errors.Join(errs...); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

// pingTimeout bounds the start-up check of each upstream.
const pingTimeout = 15 * time.Second

// pingUpstreams checks each provider's upstream once, concurrently, and
// logs the ones that do not answer: the broker serves on, and requests for
// such a credential fail (503) until its upstream answers.
func pingUpstreams(ctx context.Context, pingers map[string]providers.Pinger, log *slog.Logger) {
	var wg sync.WaitGroup
	for name, p := range pingers {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, pingTimeout)
			defer cancel()
			if err := p.Ping(pctx); err != nil {
				if ctx.Err() == nil {
					log.Warn("credential upstream unreachable at start; requests for it fail until it answers, other credentials are served",
						"credential", name, "error", err)
				}
				return
			}
			log.Info("credential upstream reachable", "credential", name)
		})
	}
	wg.Wait()
}

// mintsCredentials reports whether a credential's provider mints
// credentials, which the lease manager then manages.
func (cfg *Config) mintsCredentials() bool {
	for _, c := range cfg.Credentials {
		if providerKinds[c.Kind].managed {
			return true
		}
	}
	return false
}

// removeSocket closes ln and removes the socket file if it is still ours:
// another broker may have replaced a path we no longer listen on.
func removeSocket(path string, ln *net.UnixListener, ours os.FileInfo) {
	ln.Close()
	if fi, err := os.Lstat(path); err == nil && ours != nil && os.SameFile(fi, ours) {
		_ = os.Remove(path)
	}
}

// socketDrain is the drain timeout of the socket API's Unix socket and of
// the admin listener.
func (cfg *Config) socketDrain() time.Duration {
	if cfg.DrainTimeout == 0 {
		return defaultSocketDrain
	}
	return time.Duration(cfg.DrainTimeout)
}
