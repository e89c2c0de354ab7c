package mysql

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/credbroker/credbroker/internal/mariadbtest"
)

// hello builds a HandshakeResponse41 the way clients do.
func hello(caps uint32, user string, auth []byte, db, plugin string, attrs []byte) []byte {
	r := &response{caps: caps, maxPacket: 1 << 24, charset: 45, user: []byte(user), auth: auth, database: db, plugin: plugin, attrs: attrs}
	return r.encode()
}

// attrBlock encodes connection attributes.
func attrBlock(kv ...string) []byte {
	var b []byte
	for _, s := range kv {
		b = appendLenenc(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

const clientCaps = capLongPassword | capProtocol41 | capSecureConnection | capPluginAuth | capPluginAuthLenenc |
	capConnectWithDB | capConnectAttrs | capDeprecateEOF | capMultiResults | capTransactions

func TestParseClientHello(t *testing.T) {
	attrs := attrBlock("_client_name", "Go-MySQL-Driver", "_pid", "42")
	long := strings.Repeat("u", maxUserLen+1)
	tests := []struct {
		name    string
		p       []byte
		want    *clientHello
		ssl     bool
		wantErr string
	}{
		{"full", hello(clientCaps, "app", bytes.Repeat([]byte{7}, 20), "shop", pluginNative, attrs),
			&clientHello{caps: clientCaps, maxPacket: 1 << 24, charset: 45, user: "app", database: "shop", plugin: pluginNative, attrs: attrs}, false, ""},
		{"no password, no database", hello(clientCaps&^capConnectWithDB&^capConnectAttrs, "app", nil, "", pluginNative, nil),
			&clientHello{caps: clientCaps &^ capConnectWithDB &^ capConnectAttrs, maxPacket: 1 << 24, charset: 45, user: "app", plugin: pluginNative}, false, ""},
		{"one-byte auth length", hello(clientCaps&^capPluginAuthLenenc, "app", []byte("x"), "shop", pluginCachingSHA2, attrs),
			&clientHello{caps: clientCaps &^ capPluginAuthLenenc, maxPacket: 1 << 24, charset: 45, user: "app", database: "shop", plugin: pluginCachingSHA2, attrs: attrs}, false, ""},
		{"database without NUL at the end", append(hello(capProtocol41|capSecureConnection, "app", nil, "", "", nil), "shop"...),
			&clientHello{caps: capProtocol41 | capSecureConnection, maxPacket: 1 << 24, charset: 45, user: "app"}, false, ""},
		{"ssl request", (&response{caps: clientCaps | capSSL, maxPacket: 1 << 24, charset: 45}).header(),
			&clientHello{caps: clientCaps | capSSL, maxPacket: 1 << 24, charset: 45}, true, ""},
		{"header only without ssl", (&response{caps: clientCaps}).header(), nil, false, "does not ask for TLS"},
		{"pre-4.1", []byte{0x85, 0x24, 0, 0, 0, 0, 0, 'a', 0}, nil, false, "before 4.1"},
		{"too short for flags", []byte{1, 2}, nil, false, "shorter than its capability flags"},
		{"cut in the filler", hello(clientCaps, "app", nil, "", "", nil)[:20], nil, false, "ends early"},
		{"user without NUL", append((&response{caps: clientCaps}).header(), "app"...), nil, false, "no terminating NUL"},
		{"user too long", hello(clientCaps, long, nil, "", "", nil), nil, false, "longer than 256"},
		{"user not UTF-8", hello(clientCaps, "ap\xffp", nil, "", "", nil), nil, false, "not UTF-8"},
		{"user with a control character", hello(clientCaps, "ap\x1bp", nil, "", "", nil), nil, false, "control character"},
		{"auth longer than the packet", append(append((&response{caps: clientCaps}).header(), 'a', 0), 0xfc, 0xff, 0xff), nil, false, "authentication data"},
		{"auth length not a length", append(append((&response{caps: clientCaps}).header(), 'a', 0), 0xfb), nil, false, "not a length"},
		{"database too long", hello(clientCaps, "app", nil, strings.Repeat("d", 300), "", nil), nil, false, "database name is longer"},
		{"attributes cut", append(hello(clientCaps&^capConnectAttrs, "app", nil, "shop", pluginNative, nil), 10, 3, 'a'), nil, false, ""},
		{"attribute value cut", hello(clientCaps, "app", nil, "shop", pluginNative, append(attrBlock("k"), 5, 'v')), nil, false, "connection attributes: value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, ssl, err := parseClientHello(tc.p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if tc.want == nil {
				return // only that it does not panic: trailing bytes a flag does not cover are ignored
			}
			if err != nil {
				t.Fatal(err)
			}
			if ssl != tc.ssl || h.caps != tc.want.caps || h.maxPacket != tc.want.maxPacket || h.charset != tc.want.charset ||
				h.user != tc.want.user || h.database != tc.want.database || h.plugin != tc.want.plugin || !bytes.Equal(h.attrs, tc.want.attrs) {
				t.Errorf("got %+v ssl %v, want %+v ssl %v", h, ssl, tc.want, tc.ssl)
			}
		})
	}
}

func TestGreetingRoundTrip(t *testing.T) {
	g := greeting{version: "8.0.0-credbroker", connID: 9, scramble: newScramble(), caps: advertised(true), charset: defaultCharset, status: statusAutocommit, plugin: pluginNative}
	got, err := parseGreeting(g.encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.version != g.version || got.connID != 9 || !bytes.Equal(got.scramble, g.scramble) || got.caps != g.caps ||
		got.charset != g.charset || got.status != g.status || got.plugin != g.plugin {
		t.Errorf("got %+v, want %+v", got, g)
	}
	for _, b := range g.scramble {
		if b < 0x21 || b > 0x7e || b == '$' {
			t.Errorf("scramble byte %#x is not printable ASCII without $", b)
		}
	}
	e := &sqlError{Code: 1040, State: "08004", Message: "Too many connections"}
	if _, err := parseGreeting(errPacket(e)); !errors.As(err, new(*sqlError)) || err.Error() != e.Error() {
		t.Errorf("an ERR greeting: %v", err)
	}
	for _, bad := range [][]byte{nil, {9, 'x', 0}, {10, 'x'}, {10, 'x', 0, 1, 2}} {
		if _, err := parseGreeting(bad); err == nil {
			t.Errorf("greeting %q accepted", bad)
		}
	}
}

// TestAdvertisedAgainstMariaDB reads a real MariaDB's greeting: it offers
// every flag the listener advertises to clients (so any client's pick can
// be mirrored), and its plugin and nonce parse.
func TestAdvertisedAgainstMariaDB(t *testing.T) {
	t.Parallel()
	srv := mariadbtest.Start(t)
	// With no account for 127.0.0.1 the server greets with an ERR (1130),
	// which the client gets as the upstream's refusal.
	db := throughListener(t, Config{Listen: "127.0.0.1:0", Upstream: srv.Addr(), Credential: "db", TLS: TLSConfig{Mode: ModeDisable}},
		fixedDecider{user: "app", password: "pw"}, "")
	var me *gomysql.MySQLError
	if err := db.Ping(); !errors.As(err, &me) || me.Number != 1130 || !strings.Contains(me.Message, "credbroker: the upstream refused the connection: Host") {
		t.Errorf("an upstream greeting with ERR 1130: %v", err)
	}
	srv.Exec(t, "CREATE USER somebody@'%' IDENTIFIED BY 'x'")
	c, err := net.DialTimeout("tcp", srv.Addr(), time.Minute)
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
	if missing := mirrored &^ g.caps; missing != 0 {
		t.Errorf("MariaDB %s does not offer %s", g.version, capList(missing))
	}
	if g.plugin != pluginNative || len(g.scramble) != scrambleLen || !strings.Contains(g.version, "MariaDB") {
		t.Errorf("greeting %+v", g)
	}
}

func TestUpstreamCaps(t *testing.T) {
	mysql8 := uint32(0xdfffffff) &^ capSSL // every flag but CLIENT_REMEMBER_OPTIONS's neighbour
	client := capProtocol41 | capSecureConnection | capPluginAuth | capDeprecateEOF | capMultiStatements | capLocalFiles | capFoundRows
	tests := []struct {
		name                      string
		client, offered           uint32
		withDB, withAttrs, useTLS bool
		want                      uint32
		wantErr                   string
	}{
		{"mirrors the client", client, mysql8, true, true, true,
			capLongPassword | capProtocol41 | capSecureConnection | capPluginAuth | capPluginAuthLenenc | capDeprecateEOF |
				capMultiStatements | capLocalFiles | capFoundRows | capConnectWithDB | capConnectAttrs | capSSL, ""},
		{"no database, no attributes, no TLS", capProtocol41 | capSessionTrack, mysql8, false, false, false,
			capLongPassword | capProtocol41 | capSecureConnection | capPluginAuth | capPluginAuthLenenc | capSessionTrack, ""},
		{"never compression or query attributes", client | capCompress | capQueryAttributes | capZstdCompression, mysql8, false, false, false,
			capLongPassword | capProtocol41 | capSecureConnection | capPluginAuth | capPluginAuthLenenc | capDeprecateEOF |
				capMultiStatements | capLocalFiles | capFoundRows, ""},
		{"local files dropped", capProtocol41 | capLocalFiles, mysql8 &^ capLocalFiles, false, false, false,
			capLongPassword | capProtocol41 | capSecureConnection | capPluginAuth | capPluginAuthLenenc, ""},
		{"an upstream without DEPRECATE_EOF", client, mysql8 &^ capDeprecateEOF &^ capSessionTrack, false, false, false, 0, "CLIENT_DEPRECATE_EOF"},
		{"an upstream without CONNECT_WITH_DB", client, mysql8 &^ capConnectWithDB, true, false, false, 0, "CLIENT_CONNECT_WITH_DB"},
		{"a 4.0 upstream", client &^ capDeprecateEOF &^ capMultiStatements &^ capFoundRows &^ capLocalFiles, capLongPassword | capFoundRows, false, false, false, 0, "older than MySQL 4.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := upstreamCaps(tc.client&advertised(true), tc.offered, tc.withDB, tc.withAttrs, tc.useTLS)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %s (%v),\nwant %s", capList(got), err, capList(tc.want))
			}
		})
	}
	if a := advertised(false); a&(capSSL|capCompress|capQueryAttributes|capOptionalMetadata|capExpiredPasswords) != 0 {
		t.Errorf("advertised without TLS: %s", capList(a))
	}
	if advertised(true)&capSSL == 0 {
		t.Error("TLS not advertised with listener_tls")
	}
}

func TestErrPacket(t *testing.T) {
	long := strings.Repeat("é", 400) // 800 bytes
	p := errPacket(&sqlError{Code: 1045, State: "28000", Message: long})
	if p[0] != 0xff || binary.LittleEndian.Uint16(p[1:]) != 1045 || string(p[3:9]) != "#28000" || len(p)-9 > maxErrMessage {
		t.Errorf("packet %q", p[:12])
	}
	back := parseErr(p)
	if back.Code != 1045 || back.State != "28000" || !strings.HasPrefix(long, back.Message) {
		t.Errorf("parsed back %+v", back)
	}
	if e := parseErr([]byte{0xff, 1}); e.Code != codeUnknown {
		t.Errorf("a cut ERR: %+v", e)
	}
	if e := parseErr([]byte{0xff, 0x15, 0x04, 'n', 'o', '\n', 0x1b}); e.State != stateGeneral || e.Message != "no  " {
		t.Errorf("an ERR without SQLSTATE, with control characters: %+v", e)
	}
}
