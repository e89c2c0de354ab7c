package mysql

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/listener"
	"github.com/credbroker/credbroker/internal/logtest"
	"github.com/credbroker/credbroker/providers"
)

// sha2Server stands in for a MySQL 8 server, which cannot run on this
// machine (Debian ships MariaDB, which has no caching_sha2_password): it
// speaks the server side of caching_sha2_password, sha256_password and
// the authentication switch with real cryptography — the scramble checked
// against the stored double SHA-256 as MySQL does, the password decrypted
// with its RSA key — then answers COM_PING and COM_QUIT.
type sha2Server struct {
	password  []byte
	greet     string // the greeting's plugin
	switchTo  string // when set, the plugin the server switches to
	fullAuth  bool   // caching_sha2: the cache misses, so the password is asked for
	tlsConfig *tls.Config
	key       *rsa.PrivateKey

	mu       sync.Mutex
	wire     bytes.Buffer // every byte read off TCP, TLS records included
	hello    *clientHello
	verified []string // how each login's password was checked
	failures []error
}

// plainReader records what it reads.
type plainReader struct {
	net.Conn
	s *sha2Server
}

func (r plainReader) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.s.mu.Lock()
	r.s.wire.Write(p[:n])
	r.s.mu.Unlock()
	return n, err
}

// serve accepts connections until ln closes.
func (s *sha2Server) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if err := s.session(plainReader{c, s}); err != nil {
				s.mu.Lock()
				s.failures = append(s.failures, err)
				s.mu.Unlock()
			}
		}()
	}
}

func (s *sha2Server) session(c net.Conn) error {
	var conn net.Conn = c
	nonce := newScramble()
	caps := uint32(0xffffffff) &^ (capCompress | capZstdCompression | capSSLVerifyServer | capRememberOptions | capCapabilityExt)
	if s.tlsConfig == nil {
		caps &^= capSSL
	}
	g := greeting{version: "8.0.36", connID: 7, scramble: nonce, caps: caps, charset: 255, status: statusAutocommit, plugin: s.greet}
	if err := writePacket(conn, 0, g.encode()); err != nil {
		return err
	}
	seq, p, err := readPacket(conn, MaxHandshakePacket)
	if err != nil {
		return err
	}
	hello, ssl, err := parseClientHello(p)
	if err != nil {
		return err
	}
	if ssl {
		tc := tls.Server(c, s.tlsConfig)
		if err := tc.Handshake(); err != nil {
			return err
		}
		conn = tc
		if seq, p, err = readPacket(conn, MaxHandshakePacket); err != nil {
			return err
		}
		if hello, _, err = parseClientHello(p); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.hello = hello
	s.mu.Unlock()
	auth, err := authOf(p, hello.caps)
	if err != nil {
		return err
	}
	_, isTLS := conn.(*tls.Conn)
	x := &exchange{s: s, conn: conn, seq: seq + 1, nonce: nonce, secure: isTLS}
	plugin := hello.plugin
	if s.switchTo != "" {
		x.nonce = newScramble()
		if auth, err = x.ask(append(append(append([]byte{pktAuthSwitch}, s.switchTo...), 0), append(x.nonce, 0)...)); err != nil {
			return err
		}
		plugin = s.switchTo
	}
	how, err := x.verify(plugin, auth)
	if err != nil {
		_ = x.send(errPacket(&sqlError{Code: 1045, State: "28000", Message: "Access denied for user (using password: YES)"}))
		return err
	}
	s.mu.Lock()
	s.verified = append(s.verified, how)
	s.mu.Unlock()
	if err := x.send([]byte{pktOK, 0, 0, 2, 0, 0, 0}); err != nil {
		return err
	}
	for {
		_, p, err := readPacket(conn, 1<<20)
		if err != nil || len(p) == 0 || p[0] == 0x01 { // COM_QUIT
			return nil
		}
		if err := writePacket(conn, 1, []byte{pktOK, 0, 0, 2, 0, 0, 0}); err != nil {
			return err
		}
	}
}

// authOf returns the authentication response of a handshake response.
func authOf(p []byte, caps uint32) ([]byte, error) {
	r := reader{b: p[32:]}
	if _, err := r.nulString(); err != nil {
		return nil, err
	}
	if caps&capPluginAuthLenenc != 0 {
		return r.lenencBytes()
	}
	n, err := r.byte()
	if err != nil {
		return nil, err
	}
	return r.bytes(int(n))
}

// exchange is the server's side of one authentication exchange.
type exchange struct {
	s      *sha2Server
	conn   net.Conn
	seq    byte
	nonce  []byte
	secure bool
}

func (x *exchange) send(p []byte) error {
	err := writePacket(x.conn, x.seq, p)
	x.seq++
	return err
}

// ask sends p and returns the client's answer.
func (x *exchange) ask(p []byte) ([]byte, error) {
	if err := x.send(p); err != nil {
		return nil, err
	}
	seq, answer, err := readPacket(x.conn, MaxHandshakePacket)
	x.seq = seq + 1
	return answer, err
}

// verify checks the client's first response for plugin, asking for more
// as the plugin does, and says how the password was checked.
func (x *exchange) verify(plugin string, auth []byte) (string, error) {
	switch plugin {
	case pluginCachingSHA2:
		if !x.s.fullAuth {
			if !x.s.scrambleOK(x.nonce, auth) {
				return "", errors.New("the caching_sha2 scramble does not match")
			}
			if err := x.send([]byte{pktMoreData, sha2FastAuthOK}); err != nil {
				return "", err
			}
			return "fast", nil
		}
		answer, err := x.ask([]byte{pktMoreData, sha2FullAuth})
		if err != nil {
			return "", err
		}
		return x.full(answer, []byte{sha2RequestPublicKey})
	case pluginSHA256:
		return x.full(auth, []byte{sha256RequestKey})
	}
	return "", fmt.Errorf("the stub does not verify %s", plugin)
}

// full takes the password: in the clear over TLS, or encrypted to the
// server's key after the client asks for it with keyRequest.
func (x *exchange) full(answer, keyRequest []byte) (string, error) {
	if bytes.Equal(answer, keyRequest) {
		der, err := x509.MarshalPKIXPublicKey(&x.s.key.PublicKey)
		if err != nil {
			return "", err
		}
		if answer, err = x.ask(append([]byte{pktMoreData}, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)); err != nil {
			return "", err
		}
		plain, err := rsa.DecryptOAEP(sha1.New(), nil, x.s.key, answer, nil)
		if err != nil {
			return "", err
		}
		for i := range plain {
			plain[i] ^= x.nonce[i%len(x.nonce)]
		}
		if !bytes.Equal(plain, append(bytes.Clone(x.s.password), 0)) {
			return "", errors.New("the RSA-encrypted password does not match")
		}
		return "rsa", nil
	}
	if !x.secure {
		return "", errors.New("the password came in the clear without TLS")
	}
	if !bytes.Equal(answer, append(bytes.Clone(x.s.password), 0)) {
		return "", errors.New("the password sent over TLS does not match")
	}
	return "tls", nil
}

// scrambleOK checks a caching_sha2_password scramble as MySQL's server
// does, from the stored SHA256(SHA256(password)) alone.
func (s *sha2Server) scrambleOK(nonce, scramble []byte) bool {
	stage1 := sha256.Sum256(s.password)
	stored := sha256.Sum256(stage1[:])
	h := sha256.New()
	h.Write(stored[:])
	h.Write(nonce)
	mask := h.Sum(nil)
	if len(scramble) != len(mask) {
		return false
	}
	candidate := make([]byte, len(mask))
	for i := range mask {
		candidate[i] = scramble[i] ^ mask[i]
	}
	check := sha256.Sum256(candidate)
	return check == stored
}

// testKey is the stand-in's RSA key, made once for every test of the
// package (a 2048-bit key takes seconds under the race detector).
var testKey = func() func(testing.TB) *rsa.PrivateKey {
	once := sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })
	return func(tb testing.TB) *rsa.PrivateKey {
		k, err := once()
		if err != nil {
			tb.Fatal(err)
		}
		return k
	}
}()

// fixedDecider grants every connection one login, as the broker would.
type fixedDecider struct{ user, password string }

func (d fixedDecider) Decide(_ context.Context, req *broker.Request) (*broker.Grant, error) {
	return &broker.Grant{DecisionID: "d-1", Name: req.Credential, Credential: providers.Credential{
		Data: map[string]providers.Secret{
			FieldUsername: providers.NewSecret([]byte(d.user)),
			FieldPassword: providers.NewSecret([]byte(d.password)),
		},
	}}, nil
}

// serverCert makes a self-signed certificate for 127.0.0.1 and writes it
// as a CA file.
func serverCert(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "stub"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "stub-ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, ca
}

// TestCachingSHA2 logs in through the listener to the MySQL 8 stand-in
// with each path of caching_sha2_password and sha256_password: fast
// authentication, full authentication over TLS, full authentication with
// the server's RSA key without TLS (the password never on the wire in the
// clear), after an authentication switch, and a refusal.
func TestCachingSHA2(t *testing.T) {
	key := testKey(t)
	cert, caFile := serverCert(t)
	password := "sha2-canary-" + rand.Text()
	tests := []struct {
		name     string
		stub     *sha2Server
		tls      bool
		verified string // "" for a refusal
	}{
		{"fast", &sha2Server{greet: pluginCachingSHA2}, false, "fast"},
		{"fast over TLS", &sha2Server{greet: pluginCachingSHA2}, true, "fast"},
		{"full over TLS", &sha2Server{greet: pluginCachingSHA2, fullAuth: true}, true, "tls"},
		{"full with RSA", &sha2Server{greet: pluginCachingSHA2, fullAuth: true}, false, "rsa"},
		{"switch, full with RSA", &sha2Server{greet: pluginNative, switchTo: pluginCachingSHA2, fullAuth: true}, false, "rsa"},
		{"switch, fast", &sha2Server{greet: pluginNative, switchTo: pluginCachingSHA2}, false, "fast"},
		{"sha256_password with RSA", &sha2Server{greet: pluginSHA256}, false, "rsa"},
		{"sha256_password over TLS", &sha2Server{greet: pluginNative, switchTo: pluginSHA256}, true, "tls"},
		{"wrong password", &sha2Server{greet: pluginCachingSHA2, password: []byte("other")}, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stub := tc.stub
			if stub.password == nil {
				stub.password = []byte(password)
			}
			stub.key = key
			cfg := Config{Listen: "127.0.0.1:0", Credential: "db", TLS: TLSConfig{Mode: ModeDisable}}
			if tc.tls {
				stub.tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
				cfg.TLS = TLSConfig{CAFile: caFile}
			}
			upLn, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer upLn.Close()
			go stub.serve(upLn)
			cfg.Upstream = upLn.Addr().String()
			db := throughListener(t, cfg, fixedDecider{user: "app8", password: password}, "orders")
			err = db.Ping()
			stub.mu.Lock()
			defer stub.mu.Unlock()
			if tc.verified == "" {
				var me *gomysql.MySQLError
				if !errors.As(err, &me) || me.Number != 1045 || !strings.Contains(me.Message, "the upstream refused the issued credential") {
					t.Fatalf("error %v, want the upstream's 1045", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ping: %v (the stub: %v)", err, stub.failures)
			}
			if len(stub.verified) != 1 || stub.verified[0] != tc.verified {
				t.Errorf("the stub verified %v, want %s", stub.verified, tc.verified)
			}
			if bytes.Contains(stub.wire.Bytes(), []byte(password)) {
				t.Error("the password crossed the wire in the clear")
			}
			h := stub.hello
			if h.user != "app8" || h.database != "orders" || h.caps&capDeprecateEOF == 0 || h.caps&(capCompress|capQueryAttributes) != 0 {
				t.Errorf("the stub was greeted as %q on %q with flags %s", h.user, h.database, capList(h.caps))
			}
		})
	}
}

// throughListener runs a Listener with cfg and d on loopback and returns a
// go-sql-driver pool to it, with no password.
func throughListener(t *testing.T, cfg Config, d fixedDecider, database string) *sql.DB {
	t.Helper()
	logs := &logtest.Buffer{}
	l, err := New(cfg, d, listener.WithLogger(logs.Logger()))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, ln) }()
	c := gomysql.NewConfig()
	c.User, c.Net, c.Addr, c.DBName, c.Timeout = "app", "tcp", ln.Addr().String(), database, time.Minute
	conn, err := gomysql.NewConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() {
		db.Close()
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if strings.Contains(logs.String(), d.password) {
			t.Error("the password is in the log")
		}
	})
	return db
}

// TestDrain stops a listener with one session idle and one open past
// drain_timeout: Run returns once the open one is cut, saying so, and
// that session's connection is closed.
func TestDrain(t *testing.T) {
	stub := &sha2Server{greet: pluginCachingSHA2, password: []byte("pw")}
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer upLn.Close()
	go stub.serve(upLn)
	l, err := New(Config{Listen: "127.0.0.1:0", Upstream: upLn.Addr().String(), Credential: "db",
		TLS: TLSConfig{Mode: ModeDisable}, DrainTimeout: broker.DrainTimeout(200 * time.Millisecond)},
		fixedDecider{user: "app", password: "pw"}, listener.WithLogger(slogDiscard()))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, ln) }()
	c := gomysql.NewConfig()
	c.User, c.Net, c.Addr, c.Timeout = "app", "tcp", ln.Addr().String(), time.Minute
	conn, err := gomysql.NewConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	held, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := held.PingContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	stop()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "1 sessions still open after the drain timeout") {
			t.Errorf("Run: %v, want the cut session reported", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return after its drain timeout")
	}
	if err := held.PingContext(context.Background()); err == nil {
		t.Error("the cut session still answers")
	}
	held.Close()
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestClientAuthSwitch plays clients that answer the greeting with other
// plugins than its mysql_native_password, as raw packets: a MySQL 8
// client starts with caching_sha2_password and sends no data for it (the
// greeting named another plugin), and is switched to it with a fresh
// nonce, then gets fast_auth_success for a scramble or OK at once for an
// empty password; any other plugin is switched to mysql_native_password.
// The session then relays (COM_PING reaches the upstream stand-in).
func TestClientAuthSwitch(t *testing.T) {
	stub := &sha2Server{greet: pluginCachingSHA2, password: []byte("pw")}
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer upLn.Close()
	go stub.serve(upLn)
	l, err := New(Config{Listen: "127.0.0.1:0", Upstream: upLn.Addr().String(), Credential: "db", TLS: TLSConfig{Mode: ModeDisable}},
		fixedDecider{user: "app", password: "pw"}, listener.WithLogger(slogDiscard()))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, ln) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	tests := []struct {
		name       string
		plugin     string
		auth       []byte
		switchTo   string // "" for none
		reply      []byte // the client's answer to the switch
		fastAuthOK bool
	}{
		{"native", pluginNative, bytes.Repeat([]byte{1}, 20), "", nil, false},
		{"native, no password", pluginNative, nil, "", nil, false},
		{"caching_sha2, no data, a password", pluginCachingSHA2, nil, pluginCachingSHA2, bytes.Repeat([]byte{2}, 32), true},
		{"caching_sha2, no data, no password", pluginCachingSHA2, nil, pluginCachingSHA2, []byte{0}, false},
		{"caching_sha2 with a scramble", pluginCachingSHA2, bytes.Repeat([]byte{3}, 32), pluginCachingSHA2, bytes.Repeat([]byte{4}, 32), true},
		{"ed25519", pluginEd25519, bytes.Repeat([]byte{5}, 64), pluginNative, bytes.Repeat([]byte{6}, 20), false},
		{"clear password", pluginClearPassword, []byte("secret\x00"), pluginNative, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Minute))
			_, p, err := readPacket(c, MaxHandshakePacket)
			if err != nil {
				t.Fatal(err)
			}
			g, err := parseGreeting(p)
			if err != nil {
				t.Fatal(err)
			}
			r := &response{caps: clientCaps &^ capConnectWithDB &^ capConnectAttrs, maxPacket: 1 << 24, charset: 45, user: []byte("app"), auth: tc.auth, plugin: tc.plugin}
			if err := writePacket(c, 1, r.encode()); err != nil {
				t.Fatal(err)
			}
			next := func(wantSeq byte) []byte {
				t.Helper()
				seq, p, err := readPacket(c, MaxHandshakePacket)
				if err != nil {
					t.Fatal(err)
				}
				if seq != wantSeq {
					t.Fatalf("packet %q has sequence id %d, want %d", p, seq, wantSeq)
				}
				return p
			}
			seq := byte(2)
			if tc.switchTo != "" {
				p := next(seq)
				want := append(append([]byte{pktAuthSwitch}, tc.switchTo...), 0)
				if !bytes.HasPrefix(p, want) || len(p) != len(want)+scrambleLen+1 || p[len(p)-1] != 0 {
					t.Fatalf("switch %q, want %q, a 20-byte nonce and NUL", p, want)
				}
				nonce := p[len(want) : len(p)-1]
				if fresh := !bytes.Equal(nonce, g.scramble); fresh != (tc.switchTo == pluginCachingSHA2) {
					t.Errorf("switch to %s with the greeting's nonce: %v", tc.switchTo, !fresh)
				}
				if err := writePacket(c, seq+1, tc.reply); err != nil {
					t.Fatal(err)
				}
				seq += 2
			}
			if tc.fastAuthOK {
				if p := next(seq); !bytes.Equal(p, []byte{pktMoreData, sha2FastAuthOK}) {
					t.Fatalf("after the scramble %q, want fast_auth_success", p)
				}
				seq++
			}
			if p := next(seq); p[0] != pktOK {
				t.Fatalf("%q, want OK", p)
			}
			if err := writePacket(c, 0, []byte{0x0e}); err != nil { // COM_PING
				t.Fatal(err)
			}
			if p := next(1); p[0] != pktOK {
				t.Fatalf("ping answered %q", p)
			}
		})
	}
}

// recordingDecider keeps the request it is asked and refuses it.
type recordingDecider struct {
	reqs    chan *broker.Request
	refusal *broker.Error
}

func (d recordingDecider) Decide(_ context.Context, req *broker.Request) (*broker.Grant, error) {
	d.reqs <- req
	return nil, d.refusal
}

// TestDecisionRequest checks what the broker is asked for a client (its
// user and default database, the upstream, a session on channel mysql,
// the accepted connection, allow_ambient), and how each kind of refusal
// reaches the client.
func TestDecisionRequest(t *testing.T) {
	for _, tc := range []struct {
		kind    broker.Kind
		ambient bool
		code    uint16
		state   string
	}{
		{broker.KindDenied, false, 1045, "28000"},
		{broker.KindUnauthenticated, true, 1045, "28000"},
		{broker.KindNotFound, false, 1045, "28000"},
		{broker.KindBadRequest, false, 1043, "08S01"},
		{broker.KindUnavailable, false, 1105, "08004"},
	} {
		d := recordingDecider{reqs: make(chan *broker.Request, 1), refusal: &broker.Error{Kind: tc.kind, Message: "no, because", DecisionID: "d-42"}}
		l, err := New(Config{Listen: "127.0.0.1:0", Upstream: "db.internal:3306", Credential: "orders-db", AllowAmbient: tc.ambient}, d)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx, ln) }()
		c := gomysql.NewConfig()
		c.User, c.Net, c.Addr, c.DBName, c.Timeout = "reporting", "tcp", ln.Addr().String(), "sales", time.Minute
		conn, _ := gomysql.NewConnector(c)
		db := sql.OpenDB(conn)
		err = db.Ping()
		db.Close()
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		var me *gomysql.MySQLError
		if !errors.As(err, &me) || me.Number != tc.code || string(me.SQLState[:]) != tc.state || me.Message != "credbroker: no, because (decision d-42)" {
			t.Errorf("kind %d: %v, want %d (%s)", tc.kind, err, tc.code, tc.state)
		}
		req := <-d.reqs
		if req.Channel != broker.ChannelMySQL || req.Credential != "orders-db" || req.Host != "db.internal:3306" || req.User != "reporting" ||
			req.Database != "sales" || req.UserField != FieldUsername || !req.Session || req.Conn == nil || req.AmbientIfNoPeer != tc.ambient {
			t.Errorf("request %+v", req)
		}
	}
}
