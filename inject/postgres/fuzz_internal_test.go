package postgres

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// startupSeeds are startup packets, well formed and not.
func startupSeeds() [][]byte {
	enc := func(m interface{ Encode([]byte) ([]byte, error) }) []byte {
		b, _ := m.Encode(nil)
		return b
	}
	raw := func(code uint32, body string) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(8+len(body)))
		return append(binary.BigEndian.AppendUint32(b, code), body...)
	}
	return [][]byte{
		enc(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "app", "database": "db", "application_name": "x"}}),
		enc(&pgproto3.SSLRequest{}),
		enc(&pgproto3.GSSEncRequest{}),
		enc(&pgproto3.CancelRequest{ProcessID: 7, SecretKey: []byte{1, 2, 3, 4}}),
		raw(3<<16|2, "user\x00app\x00_pq_.x\x001\x00\x00"),
		raw(2<<16, ""),
		raw(3<<16, "user\x00app\x00user\x00again\x00\x00"),
		raw(3<<16, "user\x00app"),
		raw(3<<16, "\x00trailing"),
		raw(codeSSL, "extra"),
		binary.BigEndian.AppendUint32(nil, MaxStartupLen+1),
		binary.BigEndian.AppendUint32(nil, 0xffffffff),
		{0, 0, 0, 8},
	}
}

// TestReadPacket checks what readPacket makes of each seed.
func TestReadPacket(t *testing.T) {
	for i, b := range startupSeeds() {
		p, err := readPacket(bytes.NewReader(b))
		var se *startupError
		switch i {
		case 0:
			if err != nil || p.kind != packetStartup || len(p.params) != 3 {
				t.Errorf("startup: %+v %v", p, err)
			}
			if v, _ := p.get("user"); v != "app" {
				t.Errorf("user %q", v)
			}
		case 1, 2:
			if err != nil || (p.kind != packetSSL && p.kind != packetGSSENC) {
				t.Errorf("seed %d: %+v %v", i, p, err)
			}
		case 3:
			if err != nil || p.kind != packetCancel || p.pid != 7 || !bytes.Equal(p.secret, []byte{1, 2, 3, 4}) {
				t.Errorf("cancel: %+v %v", p, err)
			}
		case 4:
			if err != nil || p.minor != 2 {
				t.Errorf("3.2: %+v %v", p, err)
			}
		case 5:
			if !errors.As(err, &se) || se.Code != codeNotSupported {
				t.Errorf("protocol 2: %v", err)
			}
		case 6:
			if v, _ := p.get("user"); err != nil || v != "again" || len(p.params) != 1 {
				t.Errorf("repeated parameter: %+v %v", p, err)
			}
		case 12:
			if err != io.ErrUnexpectedEOF {
				t.Errorf("a length without its body: %v", err)
			}
		default:
			if !errors.As(err, &se) || se.Code != codeProtocolViolation {
				t.Errorf("seed %d: %v", i, err)
			}
		}
	}
	if _, err := readPacket(bytes.NewReader(nil)); err != io.EOF {
		t.Errorf("empty: %v", err)
	}
	if _, err := readPacket(bytes.NewReader([]byte{0, 0, 0, 20, 0, 3})); err != io.ErrUnexpectedEOF {
		t.Errorf("cut short: %v", err)
	}
}

// FuzzReadPacket: any bytes give a packet or an error, never a panic; a
// packet read is within the length bound, and a StartupMessage's
// parameters are distinct and hold no NUL.
func FuzzReadPacket(f *testing.F) {
	for _, s := range startupSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		p, err := readPacket(r)
		if err != nil {
			return
		}
		if used := len(b) - r.Len(); used > MaxStartupLen {
			t.Fatalf("read %d bytes", used)
		}
		seen := map[string]bool{}
		for _, pr := range p.params {
			if seen[pr.name] || pr.name == "" || bytes.IndexByte([]byte(pr.name+pr.value), 0) >= 0 {
				t.Fatalf("parameter %q", pr.name)
			}
			seen[pr.name] = true
		}
		if p.kind == packetCancel && len(p.secret) > maxCancelKey {
			t.Fatalf("secret of %d bytes", len(p.secret))
		}
	})
}

// fuzzPassword is the password of the handshake fuzz target: its control
// byte keeps it out of every encoding the frontend writes (hex, base64).
const fuzzPassword = "pw\x01CANARY"

// upstreamStream frames messages as a server sends them.
func upstreamStream(msgs ...pgproto3.BackendMessage) []byte {
	var b []byte
	for _, m := range msgs {
		b, _ = m.Encode(b)
	}
	return b
}

// handshakeSeeds are server startups: plain, md5, cleartext, SCRAM, a
// refusal, and messages carrying the password.
func handshakeSeeds() [][]byte {
	tail := []pgproto3.BackendMessage{
		&pgproto3.ParameterStatus{Name: "server_version", Value: "15"},
		&pgproto3.BackendKeyData{ProcessID: 42, SecretKey: []byte{9, 9, 9, 9}},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
	}
	return [][]byte{
		upstreamStream(append([]pgproto3.BackendMessage{&pgproto3.AuthenticationOk{}}, tail...)...),
		upstreamStream(append([]pgproto3.BackendMessage{&pgproto3.AuthenticationMD5Password{Salt: [4]byte{1, 2, 3, 4}}, &pgproto3.AuthenticationOk{}}, tail...)...),
		upstreamStream(append([]pgproto3.BackendMessage{&pgproto3.AuthenticationCleartextPassword{}, &pgproto3.AuthenticationOk{}}, tail...)...),
		upstreamStream(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{scramSHA256, scramSHA256Plus}}, &pgproto3.AuthenticationSASLContinue{Data: []byte("r=x,s=c2FsdA==,i=1")}),
		upstreamStream(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "password " + fuzzPassword + " is wrong"}),
		upstreamStream(&pgproto3.AuthenticationOk{}, &pgproto3.NoticeResponse{Message: fuzzPassword}, &pgproto3.ParameterStatus{Name: "x", Value: fuzzPassword}, &pgproto3.ReadyForQuery{TxStatus: 'I'}),
		upstreamStream(&pgproto3.AuthenticationOk{}, &pgproto3.AuthenticationOk{}),
		append(upstreamStream(&pgproto3.AuthenticationOk{}), 'Z', 0, 0, 0, 6, 'I', 'x'),
		{'R', 0x7f, 0xff, 0xff, 0xff},
	}
}

// runHandshake runs the handshake against upstream bytes, returning what
// the client and the upstream got.
func runHandshake(upstream []byte, tls bool) (client, sent []byte, err error) {
	var c, w bytes.Buffer
	var k keys
	h := &handshake{
		up: bytes.NewReader(upstream), upw: &w, client: &c,
		password: []byte(fuzzPassword),
		auth:     &authenticator{user: []byte("u"), password: []byte(fuzzPassword), tls: tls, binding: []byte("binding")},
		key: func(pid uint32, secret []byte) []byte {
			ck := k.add(cancelTarget{pid: pid, secret: secret})
			return ck.secret[:]
		},
	}
	err = h.run()
	return c.Bytes(), w.Bytes(), err
}

// TestHandshake: the client gets AuthenticationOk, the server's messages
// and a key of the broker's; the password is redacted from what the
// server says and never sent without TLS.
func TestHandshake(t *testing.T) {
	seeds := handshakeSeeds()
	client, sent, err := runHandshake(seeds[0], false)
	if err != nil || len(sent) != 0 {
		t.Fatal(err, sent)
	}
	fe := pgproto3.NewFrontend(bytes.NewReader(client), io.Discard)
	var types []string
	for {
		m, err := fe.Receive()
		if err != nil {
			break
		}
		if k, ok := m.(*pgproto3.BackendKeyData); ok && (k.ProcessID != 42 || bytes.Equal(k.SecretKey, []byte{9, 9, 9, 9})) {
			t.Errorf("key %+v: want pid 42 and the broker's secret", k)
		}
		types = append(types, typeName(m))
	}
	if got := join(types); got != "AuthenticationOk ParameterStatus BackendKeyData ReadyForQuery" {
		t.Errorf("client got %s", got)
	}

	if _, _, err := runHandshake(seeds[2], false); !errors.Is(err, errCleartextWithoutTLS) {
		t.Errorf("cleartext without TLS: %v", err)
	}
	var ue *upstreamError
	if client, _, err := runHandshake(seeds[4], true); !errors.As(err, &ue) || ue.resp.Code != "28P01" || ue.resp.Message != "password [redacted] is wrong" || len(client) != 0 {
		t.Errorf("refusal: %v %q", err, client)
	}
	client, _, err = runHandshake(seeds[5], false)
	if err != nil || bytes.Contains(client, []byte(fuzzPassword)) || !bytes.Contains(client, []byte("[redacted]")) {
		t.Errorf("redaction: %v %q", err, client)
	}
	for _, i := range []int{6, 7, 8} {
		if _, _, err := runHandshake(seeds[i], false); err == nil {
			t.Errorf("seed %d accepted", i)
		}
	}
}

func typeName(m pgproto3.BackendMessage) string {
	switch m.(type) {
	case *pgproto3.AuthenticationOk:
		return "AuthenticationOk"
	case *pgproto3.ParameterStatus:
		return "ParameterStatus"
	case *pgproto3.BackendKeyData:
		return "BackendKeyData"
	case *pgproto3.ReadyForQuery:
		return "ReadyForQuery"
	}
	return "other"
}

func join(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(x)
	}
	return b.String()
}

// FuzzHandshake: whatever an upstream sends during the startup, the
// handshake ends without a panic, the client never reads the password,
// and without TLS the upstream is never sent it.
func FuzzHandshake(f *testing.F) {
	for _, s := range handshakeSeeds() {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, upstream []byte, tls bool) {
		client, sent, _ := runHandshake(upstream, tls)
		if bytes.Contains(client, []byte(fuzzPassword)) {
			t.Fatalf("the client read the password: %q", client)
		}
		if !tls && bytes.Contains(sent, []byte(fuzzPassword)) {
			t.Fatalf("the password was sent without TLS: %q", sent)
		}
	})
}
