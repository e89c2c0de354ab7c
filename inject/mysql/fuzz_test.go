package mysql

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseClientHello feeds the reader of clients' handshake responses
// arbitrary packets: it must not panic, and what it accepts is bounded
// UTF-8.
func FuzzParseClientHello(f *testing.F) {
	attrs := attrBlock("_client_name", "libmariadb", "_pid", "4242", "program_name", "mariadb")
	f.Add(hello(clientCaps, "app", bytes.Repeat([]byte{7}, 20), "shop", pluginNative, attrs))
	f.Add(hello(clientCaps&^capPluginAuthLenenc, "app", []byte("x"), "", pluginCachingSHA2, nil))
	f.Add(hello(capProtocol41, "app", nil, "", "", nil))
	f.Add((&response{caps: clientCaps | capSSL, maxPacket: 1 << 24, charset: 45}).header())
	f.Add([]byte{0x85, 0x24, 0, 0, 0, 0, 0, 'a', 0})
	f.Add(append(append((&response{caps: clientCaps}).header(), 'a', 0), 0xfe, 1, 2, 3, 4, 5, 6, 7, 8))
	f.Fuzz(func(t *testing.T, p []byte) {
		h, ssl, err := parseClientHello(p)
		if err != nil {
			return
		}
		if h.caps&capProtocol41 == 0 {
			t.Fatal("a pre-4.1 response accepted")
		}
		if ssl {
			return
		}
		for _, s := range []string{h.user, h.database, h.plugin} {
			if len(s) > maxUserLen || !utf8.ValidString(s) || strings.ContainsAny(s, "\x00\r\n") {
				t.Fatalf("accepted %q", s)
			}
		}
		if len(h.attrs) > len(p) {
			t.Fatal("attributes longer than the packet")
		}
	})
}

// FuzzParseGreeting feeds the reader of the upstream's greeting arbitrary
// packets: it must not panic, and an accepted greeting's fields come from
// the packet.
func FuzzParseGreeting(f *testing.F) {
	mariadb := greeting{version: "5.5.5-10.11.14-MariaDB-0+deb12u2", connID: 31, scramble: newScramble(),
		caps: 0x81fff7fe, charset: 8, status: statusAutocommit, plugin: pluginNative}
	f.Add(mariadb.encode())
	mysql8 := mariadb
	mysql8.version, mysql8.caps, mysql8.plugin = "8.0.36", 0xdfffffff, pluginCachingSHA2
	f.Add(mysql8.encode())
	f.Add(errPacket(&sqlError{Code: 1040, State: "08004", Message: "Too many connections"}))
	f.Add([]byte{10, '4', '.', '0', 0, 1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0x0c, 0x02})
	f.Fuzz(func(t *testing.T, p []byte) {
		g, err := parseGreeting(p)
		if err != nil {
			return
		}
		if len(g.scramble) > len(p) || len(g.plugin) > len(p)*3 {
			t.Fatalf("greeting %+v from %d bytes", g, len(p))
		}
	})
}

// scriptConn is an upstream connection that plays a fixed byte stream
// and keeps what it is sent.
type scriptConn struct {
	r *bytes.Reader
	w bytes.Buffer
}

func (c *scriptConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// packets frames payloads as the upstream would send them.
func packets(payloads ...[]byte) []byte {
	var b []byte
	for i, p := range payloads {
		seq := byte(2 * i)
		b = append(b, byte(len(p)), byte(len(p)>>8), byte(len(p)>>16), seq)
		b = append(b, p...)
	}
	return b
}

// FuzzUpstreamLogin plays arbitrary upstream byte streams — greeting,
// authentication switches, more-data packets, keys, OK or ERR — against
// the listener's login without TLS: it must not panic, must end, and must
// never send the password in the clear.
func FuzzUpstreamLogin(f *testing.F) {
	der, _ := x509.MarshalPKIXPublicKey(&testKey(f).PublicKey)
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	ok := []byte{pktOK, 0, 0, 2, 0, 0, 0}
	native := greeting{version: "5.5.5-10.11.14-MariaDB", scramble: newScramble(), caps: 0x81fff7fe, charset: 8, plugin: pluginNative}
	sha2 := greeting{version: "8.0.36", scramble: newScramble(), caps: 0xdfffffff &^ capSSL, charset: 255, plugin: pluginCachingSHA2}
	ed := append(append([]byte{pktAuthSwitch}, pluginEd25519+"\x00"...), bytes.Repeat([]byte{9}, 32)...)
	f.Add(packets(native.encode(), ok))
	f.Add(packets(native.encode(), ed, ok))
	f.Add(packets(sha2.encode(), []byte{pktMoreData, sha2FastAuthOK}, ok))
	f.Add(packets(sha2.encode(), []byte{pktMoreData, sha2FullAuth}, append([]byte{pktMoreData}, pemKey...), ok))
	f.Add(packets(native.encode(), append([]byte{pktAuthSwitch}, pluginClearPassword+"\x00"...), ok))
	f.Add(packets(native.encode(), append(append([]byte{pktAuthSwitch}, pluginSHA256+"\x00"...), newScramble()...), append([]byte{pktMoreData}, pemKey...), ok))
	f.Add(packets(native.encode(), errPacket(&sqlError{Code: 1045, State: "28000", Message: "Access denied"})))
	const password = "fuzz-password-canary"
	f.Fuzz(func(t *testing.T, stream []byte) {
		c := &scriptConn{r: bytes.NewReader(stream)}
		h := &clientHello{caps: clientCaps, maxPacket: 1 << 24, charset: 45, user: "app", database: "shop", attrs: attrBlock("k", "v")}
		u := &upstreamLogin{conn: c, user: []byte("issued"), password: []byte(password), hello: h}
		_, _ = u.run(context.Background())
		if bytes.Contains(c.w.Bytes(), []byte(password)) {
			t.Fatal("the password was sent in the clear without TLS")
		}
	})
}

// FuzzAuthenticator drives the authentication state machine with any
// plugin, TLS or not, and arbitrary packets: it must not panic, must stop
// within its bound, and without TLS never reply with the password.
func FuzzAuthenticator(f *testing.F) {
	f.Add(pluginCachingSHA2, false, []byte{pktMoreData, sha2FullAuth, 0xff, pktMoreData, '-', '-'})
	f.Add(pluginNative, true, []byte{pktAuthSwitch, 'm', 'y', 's', 'q', 'l', '_', 'c', 'l', 'e', 'a', 'r', '_', 'p', 'a', 's', 's', 'w', 'o', 'r', 'd', 0})
	f.Add(pluginSHA256, false, []byte{pktMoreData, 'x', 0xff, pktOK})
	f.Fuzz(func(t *testing.T, plugin string, secure bool, stream []byte) {
		const password = "auth-password-canary"
		a := &authenticator{password: []byte(password), secure: secure}
		if _, resp, err := a.start(plugin, newScramble()); err == nil && !secure && bytes.Contains(resp, []byte(password)) {
			t.Fatal("the first response holds the password")
		}
		// Packets are split at 0xff bytes that follow another byte.
		for i, p := range bytes.SplitAfter(stream, []byte{0xff}) {
			reply, done, err := a.next(p)
			if !secure && bytes.Contains(reply, []byte(password)) {
				t.Fatal("a reply holds the password without TLS")
			}
			if done || err != nil {
				return
			}
			if i > maxAuthRounds {
				t.Fatal("the exchange went past its bound")
			}
		}
	})
}
