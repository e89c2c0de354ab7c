package redis_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	unixattest "github.com/credbroker/credbroker/attest/unix"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/listener"
	"github.com/credbroker/credbroker/inject/redis"
	"github.com/credbroker/credbroker/internal/logtest"
	"github.com/credbroker/credbroker/internal/redistest"
	"github.com/credbroker/credbroker/policies"
	"github.com/credbroker/credbroker/providers"
	"github.com/credbroker/credbroker/providers/static"
)

// The credentials of these tests.
const (
	// credApp is a username and password: the ACL user appUser.
	credApp = "cache"
	// credDefault is a static credential: the default user's password.
	credDefault = "cache-default"
	// credForbidden is denied by policy.
	credForbidden = "forbidden"

	appUser = "app"
)

// testPolicies let this test's processes (uid self) use the cache
// credentials over redis, and deny them the forbidden one.
const testPolicies = `policies:
  - name: apps-use-cache
    effect: allow
    workloads: [{unix: {uid: self}}]
    credentials: [cache, cache-default]
    when: 'request.channel == "redis"'
  - name: no-forbidden
    effect: deny
    workloads: [{unix: {uid: self}}]
    credentials: [forbidden]
`

// userPass issues a fixed username and password. It stands in for the
// providers of such credentials (Vault dynamic secrets, the postgres
// provider), whose real servers these tests do not need: what they
// exercise is the listener's use of a username and a password.
type userPass struct{ user, pass string }

func (p userPass) Credential(_ context.Context, req providers.Request) (providers.Credential, error) {
	return providers.Credential{
		Lease: providers.Lease{ID: "userpass-" + rand.Text(), Credential: req.Name, Subject: req.Identity.Subject, Kind: "userpass", ExpiresAt: time.Now().Add(time.Hour)},
		Data:  map[string]providers.Secret{"username": providers.NewSecret([]byte(p.user)), "password": providers.NewSecret([]byte(p.pass))},
	}, nil
}

// setup adjusts a harness.
type setup struct {
	// tcp serves the listener on TCP loopback instead of a Unix socket.
	tcp bool
	// server adds to the Redis server's options; the harness adds the
	// users.
	server redistest.Options
	// defaultUser gives the server's default user the static
	// credential's password (else the default user is off).
	defaultUser bool
	// appPassword, when set, is the server's password for appUser in
	// place of the one the broker issues.
	appPassword string
	// config adjusts the listener's configuration, once the server runs.
	config func(*redis.Config, *redistest.Server)
	// opts are the listener's options besides its logger.
	opts []listener.Option
}

// harness is a real broker (unix attestor, compiled policies, audit log
// running, a static provider and a username-and-password one) behind a
// Redis injection listener, in front of a throwaway redis-server whose
// default user is off: nothing works on it without the broker's log-in.
type harness struct {
	srv        *redistest.Server
	secrets    []string // every password the broker issues: never shown
	appPass    string
	db         string
	logs       *logtest.Buffer
	network    string // the listener's
	addr       string
	upstream   string
	cancel     context.CancelFunc
	runErr     chan error
	home       string
	stopped    bool
	clientSeen [][]byte
}

func newHarness(t *testing.T, s setup) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{appPass: "app-canary-" + rand.Text(), db: filepath.Join(dir, "audit.db"), logs: &logtest.Buffer{}, home: dir}
	defaultPass := "default-canary-" + rand.Text()
	forbiddenPass := "forbidden-canary-" + rand.Text()
	h.secrets = []string{h.appPass, defaultPass, forbiddenPass}

	serverPass := h.appPass
	if s.appPassword != "" {
		serverPass = s.appPassword
	}
	opts := s.server
	opts.Users = append(opts.Users, appUser+" on >"+serverPass+" ~* &* +@all")
	if s.defaultUser {
		opts.Users = append(opts.Users, "default on >"+defaultPass+" ~* &* +@all")
	}
	h.srv = redistest.Start(t, opts)

	set, err := policies.Compile([]policies.File{{Name: "p.yaml", Data: []byte(testPolicies)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	alog, err := audit.Open(ctx, audit.Config{Path: h.db})
	if err != nil {
		t.Fatal(err)
	}
	auditDone := make(chan error, 1)
	go func() { auditDone <- alog.Run(ctx) }()
	peer, err := unixattest.New(unixattest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	provs := map[string]broker.Provider{credApp: userPass{appUser, h.appPass}}
	kinds := map[string]string{credApp: "userpass"}
	for name, secret := range map[string]string{credDefault: defaultPass, credForbidden: forbiddenPass} {
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := static.New(static.Config{Name: name, File: file, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		provs[name], kinds[name] = p, static.Kind
	}
	b, err := broker.New(broker.Config{Peer: peer, Credentials: provs, Kinds: kinds, Policies: set, Audit: alog, Logger: h.logs.Logger()})
	if err != nil {
		t.Fatal(err)
	}

	var ln net.Listener
	cfg := redis.Config{Upstream: h.srv.Addr, Credential: credApp}
	if s.tcp {
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln = peer.ListenTCP(tl)
		h.network, h.addr = "tcp", tl.Addr().String()
		cfg.Listen = h.addr
	} else {
		sockDir, err := os.MkdirTemp("", "cbredis-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(sockDir) })
		h.network, h.addr = "unix", filepath.Join(sockDir, "s")
		ul, err := broker.ListenUnix(h.addr, 0o600, -1)
		if err != nil {
			t.Fatal(err)
		}
		if ln, err = peer.Listen(ul); err != nil {
			t.Fatal(err)
		}
		cfg.Listen = "unix://" + h.addr
	}
	if s.config != nil {
		s.config(&cfg, h.srv)
	}
	h.upstream = cfg.Upstream
	p, err := redis.New(cfg, b, append([]listener.Option{listener.WithLogger(h.logs.Logger())}, s.opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	h.cancel = stop
	h.runErr = make(chan error, 1)
	go func() { h.runErr <- p.Run(runCtx, ln) }()
	t.Cleanup(func() {
		if !h.stopped {
			if err := h.stop(); err != nil {
				t.Errorf("Run: %v", err)
			}
		}
		cancel()
		<-auditDone
		alog.Close()
		// No issued password in the log or the audit database, nor in
		// anything a client of the listener received.
		files, _ := filepath.Glob(h.db + "*")
		for _, f := range files {
			b, _ := os.ReadFile(f)
			h.assertNoSecret(t, "audit file "+filepath.Base(f), b)
		}
		h.assertNoSecret(t, "the log", []byte(h.logs.String()))
		for _, b := range h.clientSeen {
			h.assertNoSecret(t, "what a client received", b)
		}
	})
	return h
}

// stop ends Run and returns its error.
func (h *harness) stop() error {
	h.stopped = true
	h.cancel()
	return <-h.runErr
}

// assertNoSecret fails if b holds a password the broker issues.
func (h *harness) assertNoSecret(t *testing.T, where string, b []byte) {
	t.Helper()
	for _, s := range h.secrets {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("%s holds an issued password", where)
		}
	}
}

// dial connects a raw client to the listener; what it receives is
// checked for secrets at cleanup.
func (h *harness) dial(t *testing.T) *redistest.Conn {
	t.Helper()
	c := redistest.Dial(t, h.network, h.addr)
	t.Cleanup(func() { h.clientSeen = append(h.clientSeen, c.Received()) })
	return c
}

// cli runs redis-cli against the listener, without a password, and
// returns its output.
func (h *harness) cli(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redis-cli is not installed (Debian: apt-get install redis-tools): %v", err)
	}
	target := []string{"-s", h.addr}
	if h.network == "tcp" {
		host, port, _ := net.SplitHostPort(h.addr)
		target = []string{"-h", host, "-p", port}
	}
	cmd := exec.Command(bin, append(target, args...)...)
	cmd.Env = []string{"HOME=" + h.home, "PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	h.clientSeen = append(h.clientSeen, out)
	if err != nil && !bytes.Contains(out, []byte("NOPERM")) && !bytes.Contains(out, []byte("ERR")) {
		t.Fatalf("redis-cli %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// rows returns the decision rows of credential.
func (h *harness) rows(t *testing.T, credential string) []audit.Record {
	t.Helper()
	var rows []audit.Record
	err := audit.Query(context.Background(), h.db, audit.Filter{Credential: credential, Kind: audit.KindDecision}, func(r *audit.Record) error {
		rows = append(rows, *r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// redis-cli works through the listener without a password, on a Unix
// socket and on TCP loopback, as the ACL user whose password the broker
// holds; the server itself refuses an unauthenticated client. Each
// connection is one allow row on channel redis.
func TestRedisCLI(t *testing.T) {
	for _, tcp := range []bool{false, true} {
		t.Run(map[bool]string{false: "unix", true: "tcp"}[tcp], func(t *testing.T) {
			h := newHarness(t, setup{tcp: tcp})
			direct := redistest.Dial(t, "tcp", h.srv.Addr)
			if r, err := direct.Do("SET", "k", "v"); err != nil || !strings.HasPrefix(r.Str, "NOAUTH") {
				t.Fatalf("unauthenticated SET on the server = %v, %v; want NOAUTH", r, err)
			}
			if out := h.cli(t, "SET", "k", "hello"); out != "OK" {
				t.Fatalf("SET: %q", out)
			}
			if out := h.cli(t, "GET", "k"); out != "hello" {
				t.Fatalf("GET: %q", out)
			}
			if out := h.cli(t, "ACL", "WHOAMI"); out != appUser {
				t.Fatalf("ACL WHOAMI: %q, want %s", out, appUser)
			}
			rows := h.rows(t, credApp)
			if len(rows) != 3 {
				t.Fatalf("%d audit rows for 3 connections", len(rows))
			}
			for _, r := range rows {
				if r.Decision != audit.DecisionAllow || r.Channel != broker.ChannelRedis || r.TargetHost != h.srv.Addr || r.Policy != "apps-use-cache" || r.Fingerprint == "" {
					t.Errorf("row %+v, want an allow on channel redis to %s by apps-use-cache", r, h.srv.Addr)
				}
			}
		})
	}
}

// A client's own AUTH gets +OK and never reaches the server: the server
// counts only the broker's AUTHs, none failing, its ACL log records no
// attempt with the client's user, and MONITOR never shows the client's
// user or password. The connection stays the issued user's.
func TestClientAuthAnsweredLocally(t *testing.T) {
	const intruder, clientSecret = "intruder-user", "client-secret-4f2a"
	h := newHarness(t, setup{})
	admin := h.srv.Admin(t)

	// Control: sent to the server itself, such an AUTH shows in its ACL
	// log and commandstats.
	direct := redistest.Dial(t, "tcp", h.srv.Addr)
	if r, _ := direct.Do("AUTH", intruder, clientSecret); !strings.HasPrefix(r.Str, "WRONGPASS") {
		t.Fatalf("direct AUTH = %v", r)
	}
	if log := admin.MustDo(t, "ACL", "LOG").String(); !strings.Contains(log, intruder) {
		t.Fatalf("the control AUTH is not in the ACL log: %s", log)
	}
	admin.MustDo(t, "ACL", "LOG", "RESET")
	admin.MustDo(t, "CONFIG", "RESETSTAT")
	monitor := h.srv.Monitor(t)
	// A client of the listener may MONITOR too: it sees the AUTHs
	// redacted (and, at cleanup, no issued password in what it received).
	clientMonitor := h.dial(t)
	clientMonitor.MustDo(t, "MONITOR")

	c := h.dial(t)
	for _, args := range [][]string{{"AUTH", intruder, clientSecret}, {"AUTH", clientSecret}, {"auth", intruder, clientSecret}} {
		if r, err := c.Do(args...); err != nil || r.Type != '+' || r.Str != "OK" {
			t.Fatalf("%s through the listener = %v, %v; want +OK", args[0], r, err)
		}
	}
	if r, _ := c.Do("AUTH", intruder, clientSecret, "extra"); !r.IsError() || !strings.Contains(r.Str, "wrong number of arguments") {
		t.Errorf("AUTH with 3 arguments = %v, want the server's arity error", r)
	}
	if r, _ := c.Do("ACL", "WHOAMI"); r.Str != appUser {
		t.Errorf("ACL WHOAMI after AUTH = %v, want %s", r, appUser)
	}
	if r, _ := c.Do("SET", "k", "v"); r.Str != "OK" {
		t.Errorf("SET after AUTH = %v", r)
	}

	stats := h.srv.CommandStats(t, admin)["auth"]
	// One AUTH at connect for each of the two clients, one for each of
	// the client's three.
	if stats["calls"] != "5" || stats["failed_calls"] != "0" || stats["rejected_calls"] != "1" {
		t.Errorf("cmdstat_auth %v, want 5 calls (the broker's), none failed, 1 rejected (the bare AUTH)", stats)
	}
	if log := admin.MustDo(t, "ACL", "LOG"); len(log.Elems) != 0 {
		t.Errorf("ACL log after the listener's AUTHs: %s", log)
	}
	// Everything the server ran up to a marker.
	marker := "marker-" + rand.Text()
	admin.MustDo(t, "ECHO", marker)
	var lines []string
	for {
		line, err := monitor.ReadLine()
		if err != nil {
			t.Fatalf("MONITOR: %v", err)
		}
		if strings.Contains(line, marker) {
			break
		}
		lines = append(lines, line)
	}
	for {
		line, err := clientMonitor.ReadLine()
		if err != nil {
			t.Fatalf("MONITOR through the listener: %v", err)
		}
		if strings.Contains(line, marker) {
			break
		}
	}
	all := strings.Join(lines, "\n")
	if strings.Contains(all, clientSecret) || strings.Contains(all, intruder) {
		t.Errorf("the client's user or password reached the server:\n%s", all)
	}
	if n := strings.Count(all, `"AUTH" "(redacted)" "(redacted)"`); n != 5 {
		t.Errorf("MONITOR shows %d redacted AUTHs, want 5:\n%s", n, all)
	}
	h.assertNoSecret(t, "MONITOR", []byte(all))
}

// HELLO 3 AUTH through the listener logs in with the issued credential
// and switches the connection to RESP3, whose replies reach the client.
func TestHello3(t *testing.T) {
	h := newHarness(t, setup{tcp: true})
	c := h.dial(t)
	r, err := c.Do("HELLO", "3", "AUTH", "intruder", "client-secret", "SETNAME", "worker-1")
	if err != nil || r.Type != '%' {
		t.Fatalf("HELLO 3 = %v, %v; want a RESP3 map", r, err)
	}
	if m := r.Map(); m["proto"].Int != 3 || m["server"].Str != "redis" {
		t.Errorf("HELLO reply %v", r)
	}
	c.MustDo(t, "HSET", "h", "f", "v")
	if r := c.MustDo(t, "HGETALL", "h"); r.Type != '%' || r.Map()["f"].Str != "v" {
		t.Errorf("HGETALL = %v, want a RESP3 map", r)
	}
	if r := c.MustDo(t, "CLIENT", "GETNAME"); r.Str != "worker-1" {
		t.Errorf("CLIENT GETNAME = %v", r)
	}
	if r := c.MustDo(t, "ACL", "WHOAMI"); r.Str != appUser {
		t.Errorf("ACL WHOAMI = %v", r)
	}
	// redis-cli in RESP3 mode (HELLO 3 without AUTH) too.
	if out := h.cli(t, "-3", "HGETALL", "h"); !strings.Contains(out, "f") || !strings.Contains(out, "v") {
		t.Errorf("redis-cli -3 HGETALL: %q", out)
	}
	stats := h.srv.CommandStats(t, h.srv.Admin(t))
	if stats["hello"]["failed_calls"] != "0" || stats["auth"]["failed_calls"] != "0" {
		t.Errorf("commandstats hello %v auth %v", stats["hello"], stats["auth"])
	}
}

// Pipelined commands, with AUTH and HELLO … AUTH among them, inline
// commands and a large value, get their replies in order.
func TestPipelining(t *testing.T) {
	h := newHarness(t, setup{})
	c := h.dial(t)
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	type step struct {
		send  []byte
		check func(redistest.Reply) bool
	}
	ok := func(r redistest.Reply) bool { return r.Type == '+' && r.Str == "OK" }
	var steps []step
	for i := range 300 {
		k := "k" + strconv.Itoa(i)
		switch {
		case i == 100:
			steps = append(steps, step{redistest.Encode("AUTH", "x", "client-secret"), ok})
		case i == 150:
			steps = append(steps, step{redistest.Encode("HELLO", "2", "AUTH", "x", "client-secret"), func(r redistest.Reply) bool {
				return r.Type == '*' && r.Map()["proto"].Int == 2
			}})
		case i == 200:
			steps = append(steps, step{redistest.Encode("SET", "big", big), ok},
				step{redistest.Encode("STRLEN", "big"), func(r redistest.Reply) bool { return r.Int == int64(len(big)) }})
		case i%7 == 0:
			steps = append(steps, step{[]byte("INCR counter\r\n"), func(r redistest.Reply) bool { return r.Type == ':' && r.Int == int64(i/7+1) }})
			continue
		}
		steps = append(steps, step{redistest.Encode("SET", k, strconv.Itoa(i)), ok},
			step{redistest.Encode("GET", k), func(r redistest.Reply) bool { return r.Str == strconv.Itoa(i) }})
	}
	var all []byte
	for _, s := range steps {
		all = append(all, s.send...)
	}
	sent := make(chan error, 1)
	go func() { sent <- c.Send(all) }()
	for i, s := range steps {
		r, err := c.Receive()
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if !s.check(r) {
			t.Fatalf("reply %d to %.60q: %.200s", i, s.send, r)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
}

// TLS on the upstream leg, to a server that requires client certificates:
// each mode, and the refusals of a name or CA that does not match.
func TestTLSUpstream(t *testing.T) {
	tests := []struct {
		name   string
		tls    func(redistest.TLSFiles) *redis.TLSConfig
		works  bool
		refuse string
	}{
		{"verify-full by default", func(f redistest.TLSFiles) *redis.TLSConfig {
			return &redis.TLSConfig{CAFile: f.CAFile, ServerName: redistest.ServerName, CertFile: f.ClientCertFile, KeyFile: f.ClientKeyFile}
		}, true, ""},
		{"verify-full to the IP", func(f redistest.TLSFiles) *redis.TLSConfig {
			return &redis.TLSConfig{Mode: redis.ModeVerifyFull, CAFile: f.CAFile, CertFile: f.ClientCertFile, KeyFile: f.ClientKeyFile}
		}, true, ""},
		{"verify-ca ignores the name", func(f redistest.TLSFiles) *redis.TLSConfig {
			return &redis.TLSConfig{Mode: redis.ModeVerifyCA, CAFile: f.CAFile, ServerName: "wrong.example", CertFile: f.ClientCertFile, KeyFile: f.ClientKeyFile}
		}, true, ""},
		{"require", func(f redistest.TLSFiles) *redis.TLSConfig {
			return &redis.TLSConfig{Mode: redis.ModeRequire, CertFile: f.ClientCertFile, KeyFile: f.ClientKeyFile}
		}, true, ""},
		{"verify-full, wrong name", func(f redistest.TLSFiles) *redis.TLSConfig {
			return &redis.TLSConfig{CAFile: f.CAFile, ServerName: "wrong.example", CertFile: f.ClientCertFile, KeyFile: f.ClientKeyFile}
		}, false, "TLS with the upstream redis"},
		{"verify-ca, other CA", func(f redistest.TLSFiles) *redis.TLSConfig {
			return &redis.TLSConfig{Mode: redis.ModeVerifyCA, CertFile: f.ClientCertFile, KeyFile: f.ClientKeyFile}
		}, false, "TLS with the upstream redis"},
		{"no client certificate", func(f redistest.TLSFiles) *redis.TLSConfig {
			return &redis.TLSConfig{CAFile: f.CAFile, ServerName: redistest.ServerName}
		}, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, setup{
				server: redistest.Options{TLS: true, TLSAuthClients: true},
				config: func(c *redis.Config, srv *redistest.Server) {
					c.Upstream, c.TLS = srv.TLSAddr, tc.tls(srv.TLS)
				},
			})
			c := h.dial(t)
			r, err := c.Do("SET", "k", "over-tls")
			if tc.works {
				if err != nil || r.Str != "OK" {
					t.Fatalf("SET = %v, %v", r, err)
				}
				if r := c.MustDo(t, "GET", "k"); r.Str != "over-tls" {
					t.Fatalf("GET = %v", r)
				}
				return
			}
			if err != nil || r.Type != '-' || !strings.HasPrefix(r.Str, "ERR ") || !strings.Contains(r.Str, tc.refuse) || !strings.Contains(r.Str, "(decision ") {
				t.Fatalf("reply %v, %v; want -ERR … %s … (decision …)", r, err, tc.refuse)
			}
			if b, err := c.ReadToEOF(); err != nil || len(b) != 0 {
				t.Errorf("after the refusal: %q, %v; want the connection closed", b, err)
			}
		})
	}
}

// A denied workload gets a readable NOPERM error naming the decision,
// recorded as a deny on channel redis; nothing reaches the server.
func TestDenied(t *testing.T) {
	h := newHarness(t, setup{config: func(c *redis.Config, _ *redistest.Server) { c.Credential = credForbidden }})
	admin := h.srv.Admin(t)
	before := admin.MustDo(t, "INFO", "stats").Str

	out := h.cli(t, "GET", "k")
	if !strings.Contains(out, "NOPERM credbroker: ") || !strings.Contains(out, "(decision ") {
		t.Errorf("redis-cli output %q, want a NOPERM error naming the decision", out)
	}
	c := h.dial(t)
	r, err := c.Do("GET", "k")
	if err != nil || r.Type != '-' || !strings.HasPrefix(r.Str, "NOPERM credbroker: ") {
		t.Fatalf("reply %v, %v; want -NOPERM", r, err)
	}
	if b, err := c.ReadToEOF(); err != nil || len(b) != 0 {
		t.Errorf("after the refusal: %q, %v; want the connection closed", b, err)
	}
	rows := h.rows(t, credForbidden)
	if len(rows) != 2 {
		t.Fatalf("%d rows for 2 connections", len(rows))
	}
	for _, row := range rows {
		if row.Decision != audit.DecisionDeny || row.Channel != broker.ChannelRedis || row.Policy != "no-forbidden" {
			t.Errorf("row %+v, want a deny on channel redis by no-forbidden", row)
		}
		if !strings.Contains(r.Str, row.DecisionID) && !strings.Contains(out, row.DecisionID) {
			t.Errorf("decision %s is named in neither refusal", row.DecisionID)
		}
	}
	after := admin.MustDo(t, "INFO", "stats").Str
	if connections(t, after) != connections(t, before) {
		t.Errorf("the server accepted %d connections for denied clients", connections(t, after)-connections(t, before))
	}
}

// connections reads total_connections_received from INFO stats.
func connections(t *testing.T, info string) int {
	t.Helper()
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_connections_received:"); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no total_connections_received in %q", info)
	return 0
}

// When the server refuses the issued credential, the client is told so
// with the server's reason, never the password, and the log says why.
func TestUpstreamAuthFails(t *testing.T) {
	h := newHarness(t, setup{appPassword: "not-what-the-broker-issues"})
	c := h.dial(t)
	r, err := c.Do("PING")
	want := "ERR upstream authentication failed: WRONGPASS invalid username-password pair or user is disabled. (decision "
	if err != nil || r.Type != '-' || !strings.HasPrefix(r.Str, want) {
		t.Fatalf("reply %v, %v; want -%s…", r, err, want)
	}
	if b, err := c.ReadToEOF(); err != nil || len(b) != 0 {
		t.Errorf("after the refusal: %q, %v; want the connection closed", b, err)
	}
	if !strings.Contains(h.logs.String(), "upstream log-in failed") {
		t.Errorf("the log does not say the log-in failed:\n%s", h.logs.String())
	}
}

// A credential holding a password alone (a static one, password_field:
// value) logs in as the default user.
func TestPasswordOnly(t *testing.T) {
	h := newHarness(t, setup{defaultUser: true, config: func(c *redis.Config, _ *redistest.Server) {
		c.Credential, c.PasswordField = credDefault, static.FieldValue
	}})
	if out := h.cli(t, "SET", "k", "v"); out != "OK" {
		t.Fatalf("SET: %q", out)
	}
	c := h.dial(t)
	if r := c.MustDo(t, "AUTH", "client-secret"); r.Str != "OK" {
		t.Errorf("AUTH = %v", r)
	}
	if r := c.MustDo(t, "HELLO", "3", "AUTH", "someone", "client-secret"); r.Type != '%' {
		t.Errorf("HELLO 3 AUTH = %v", r)
	}
	if r := c.MustDo(t, "ACL", "WHOAMI"); r.Str != "default" {
		t.Errorf("ACL WHOAMI = %v, want default", r)
	}
	if r := c.MustDo(t, "GET", "k"); r.Str != "v" {
		t.Errorf("GET = %v", r)
	}
}

// A credential without the password field is refused with a message
// naming the field to configure.
func TestMissingPasswordField(t *testing.T) {
	h := newHarness(t, setup{defaultUser: true, config: func(c *redis.Config, _ *redistest.Server) { c.Credential = credDefault }})
	r, err := h.dial(t).Do("PING")
	if err != nil || !strings.HasPrefix(r.Str, `ERR credbroker: credential "cache-default" has no field "password" to log in with (see password_field)`) {
		t.Fatalf("reply %v, %v", r, err)
	}
}

// A malformed command after good ones: their replies, then Redis's
// protocol error, then the connection closes.
func TestProtocolError(t *testing.T) {
	h := newHarness(t, setup{})
	c := h.dial(t)
	if err := c.Send([]byte("PING\r\n" + string(redistest.Encode("SET", "a", "1")) + "*1\r\n$4\r\nPINGxx")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"PONG", "OK", "Protocol error: a bulk string must be followed by CRLF"} {
		r, err := c.Receive()
		if err != nil || !strings.HasSuffix(r.Str, want) {
			t.Fatalf("reply %v, %v; want %q", r, err, want)
		}
	}
	if b, err := c.ReadToEOF(); err != nil || len(b) != 0 {
		t.Errorf("after the protocol error: %q, %v; want the connection closed", b, err)
	}
	if r := h.srv.Admin(t).MustDo(t, "GET", "a"); r.Str != "1" {
		t.Errorf("GET a = %v", r)
	}
	if !strings.Contains(h.logs.String(), "client protocol error") {
		t.Errorf("the log does not record the protocol error:\n%s", h.logs.String())
	}
}

// The upstream may be the server's Unix socket.
func TestUnixUpstream(t *testing.T) {
	h := newHarness(t, setup{config: func(c *redis.Config, srv *redistest.Server) { c.Upstream = "unix://" + srv.Socket }})
	if out := h.cli(t, "SET", "k", "via-socket"); out != "OK" {
		t.Fatalf("SET: %q", out)
	}
	if r := h.srv.Admin(t).MustDo(t, "GET", "k"); r.Str != "via-socket" {
		t.Errorf("GET = %v", r)
	}
	if rows := h.rows(t, credApp); len(rows) != 1 || rows[0].TargetHost != "unix://"+h.srv.Socket {
		t.Errorf("rows %+v, want one with the socket as its host", rows)
	}
}

// Stopping the listener waits for open sessions up to drain_timeout, then
// cuts them and says so; a session that ends in time is not cut.
func TestDrain(t *testing.T) {
	h := newHarness(t, setup{config: func(c *redis.Config, _ *redistest.Server) { c.DrainTimeout = broker.DrainTimeout(time.Millisecond) }})
	c := h.dial(t)
	c.MustDo(t, "PING")
	err := h.stop()
	if err == nil || !strings.Contains(err.Error(), "1 sessions still open after the drain timeout") {
		t.Fatalf("Run = %v, want the open session cut", err)
	}
	if b, err := c.ReadToEOF(); err != nil || len(b) != 0 {
		t.Errorf("the cut session: %q, %v; want the connection closed", b, err)
	}

	h = newHarness(t, setup{})
	c = h.dial(t)
	c.MustDo(t, "PING")
	stopped := make(chan error, 1)
	go func() { stopped <- h.stop() }()
	// The session still works while the listener drains, and ends when
	// the client closes.
	c.MustDo(t, "SET", "k", "v")
	c.Close()
	if err := <-stopped; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// nopDecider refuses everything; for tests that never serve.
type nopDecider struct{}

func (nopDecider) Decide(context.Context, *broker.Request) (*broker.Grant, error) {
	return nil, &broker.Error{Kind: broker.KindDenied, Message: "no"}
}

// With a connection cap of one, a second client is served once the first
// has left; the gauge counts the open session.
func TestConnLimit(t *testing.T) {
	m := broker.NewConnMetrics(prometheus.NewRegistry())
	h := newHarness(t, setup{opts: []listener.Option{listener.WithConnLimit(broker.LimitConfig{Name: "redis", Max: 1, Metrics: m})}})
	first := h.dial(t)
	first.MustDo(t, "PING")
	if got := testutil.ToFloat64(m.Open("redis")); got != 1 {
		t.Errorf("open connections gauge = %v, want 1", got)
	}
	second := h.dial(t)
	if err := second.Send(redistest.Encode("SET", "k", "second")); err != nil {
		t.Fatal(err)
	}
	first.MustDo(t, "SET", "k", "first")
	first.Close()
	if r, err := second.Receive(); err != nil || r.Str != "OK" {
		t.Fatalf("second client: %v, %v", r, err)
	}
	if r := second.MustDo(t, "GET", "k"); r.Str != "second" {
		t.Errorf("GET = %v: the second client's SET ran before the first left", r)
	}
	if rows := h.rows(t, credApp); len(rows) != 2 {
		t.Errorf("%d rows, want 2", len(rows))
	}
}

// Once Run has returned and the harness is stopped, no goroutine of the
// listener is left: relays, reply copiers, refusals.
func TestNoGoroutineLeft(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("serve", func(t *testing.T) {
		h := newHarness(t, setup{})
		c := h.dial(t)
		c.MustDo(t, "SET", "k", "v")
		c.MustDo(t, "AUTH", "x", "y")
		if err := c.Send([]byte("*1\r\n$4\r\nPINGxx")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ReadToEOF(); err != nil {
			t.Fatal(err)
		}
		h.dial(t).MustDo(t, "PING") // left open: cut or closed by the drain
	})
	t.Run("refuse", func(t *testing.T) {
		h := newHarness(t, setup{config: func(c *redis.Config, _ *redistest.Server) { c.Credential = credForbidden }})
		if r, _ := h.dial(t).Do("PING"); !r.IsError() {
			t.Fatalf("PING = %v", r)
		}
		h.dial(t).Close() // sends nothing
	})
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
	}
}

// Replies the client did not ask for (pub/sub messages) reach it, and
// QUIT ends the session once its +OK is relayed.
func TestPubSubAndQuit(t *testing.T) {
	h := newHarness(t, setup{})
	sub := h.dial(t)
	if r := sub.MustDo(t, "SUBSCRIBE", "news"); len(r.Elems) != 3 || r.Elems[0].Str != "subscribe" {
		t.Fatalf("SUBSCRIBE = %v", r)
	}
	if r := h.srv.Admin(t).MustDo(t, "PUBLISH", "news", "hello"); r.Int != 1 {
		t.Fatalf("PUBLISH reached %d subscribers", r.Int)
	}
	if r, err := sub.Receive(); err != nil || len(r.Elems) != 3 || r.Elems[2].Str != "hello" {
		t.Fatalf("message %v, %v", r, err)
	}
	c := h.dial(t)
	if r := c.MustDo(t, "QUIT"); r.Str != "OK" {
		t.Fatalf("QUIT = %v", r)
	}
	if b, err := c.ReadToEOF(); err != nil || len(b) != 0 {
		t.Errorf("after QUIT: %q, %v; want the connection closed", b, err)
	}
}
