package postgres

import (
	"bytes"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// authMsg is an authentication request's body: code, then data.
func authMsg(code uint32, data string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, code), data...)
}

// saslList is an AuthenticationSASL body offering mechs.
func saslList(mechs ...string) []byte {
	var b []byte
	for _, m := range mechs {
		b = append(append(b, m...), 0)
	}
	return authMsg(authSASL, string(append(b, 0)))
}

// TestSCRAMVector runs the exchange of RFC 7677's example (user "user",
// password "pencil") through the authenticator: the client-final message
// and its proof, and the server signature it accepts.
func TestSCRAMVector(t *testing.T) {
	a := &authenticator{user: []byte("user"), password: []byte("pencil")}
	if _, _, err := a.step(saslList(scramSHA256)); err != nil {
		t.Fatal(err)
	}
	// The RFC's client nonce and its n=user, where PostgreSQL's is n=.
	a.nonce, a.clientFirst = "rOprNGfwEbeRWgbNEkqO", "n=user,r=rOprNGfwEbeRWgbNEkqO"
	reply, done, err := a.step(authMsg(authSASLContinue, "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"))
	if err != nil || done {
		t.Fatal(done, err)
	}
	var resp pgproto3.SASLResponse
	if reply[0] != 'p' || resp.Decode(reply[5:]) != nil {
		t.Fatalf("reply %q", reply)
	}
	if want := "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="; string(resp.Data) != want {
		t.Fatalf("client-final %q, want %q", resp.Data, want)
	}
	if _, _, err := a.step(authMsg(authOK, "")); err == nil {
		t.Fatal("AuthenticationOk accepted before the server's signature")
	}
	if _, _, err := a.step(authMsg(authSASLFinal, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")); err != nil {
		t.Fatal(err)
	}
	if _, done, err := a.step(authMsg(authOK, "")); err != nil || !done {
		t.Fatal(done, err)
	}
}

// TestSCRAMRefusals: a wrong server signature, a nonce that does not
// extend the client's, and an iteration count out of bounds end the login.
func TestSCRAMRefusals(t *testing.T) {
	start := func() *authenticator {
		a := &authenticator{user: []byte("u"), password: []byte("pw")}
		if _, _, err := a.step(saslList(scramSHA256)); err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, tt := range []struct {
		name, serverFirst, serverFinal, want string
	}{
		{"foreign nonce", "r=other,s=c2FsdA==,i=4096", "", "does not extend"},
		{"same nonce", "r=NONCE,s=c2FsdA==,i=4096", "", "does not extend"},
		{"iterations", "r=NONCEx,s=c2FsdA==,i=99999999999", "", "iteration count"},
		{"zero iterations", "r=NONCEx,s=c2FsdA==,i=0", "", "iteration count"},
		{"bad salt", "r=NONCEx,s=***,i=4096", "", "salt"},
		{"extension first", "m=ext,r=NONCEx,s=c2FsdA==,i=4096", "", "malformed"},
		{"wrong signature", "r=NONCEx,s=c2FsdA==,i=4096", "v=AAAA", "signature is wrong"},
		{"server error", "r=NONCEx,s=c2FsdA==,i=4096", "e=invalid-proof", "refused the SCRAM proof: invalid-proof"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := start()
			_, _, err := a.step(authMsg(authSASLContinue, strings.ReplaceAll(tt.serverFirst, "NONCE", a.nonce)))
			if err == nil && tt.serverFinal != "" {
				_, _, err = a.step(authMsg(authSASLFinal, tt.serverFinal))
			}
			var ae *authError
			if !errors.As(err, &ae) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// TestMechanismChoice: SCRAM-SHA-256-PLUS over TLS when offered, and the
// GS2 flag saying what the broker could do otherwise.
func TestMechanismChoice(t *testing.T) {
	for _, tt := range []struct {
		name     string
		tls      bool
		binding  []byte
		offered  []string
		mech     string
		gs2      string
		wantFail bool
	}{
		{"PLUS over TLS", true, []byte{1}, []string{scramSHA256, scramSHA256Plus}, scramSHA256Plus, "p=tls-server-end-point,,", false},
		{"no PLUS offered over TLS", true, []byte{1}, []string{scramSHA256}, scramSHA256, "y,,", false},
		{"no binding defined", true, nil, []string{scramSHA256, scramSHA256Plus}, scramSHA256, "n,,", false},
		{"no TLS", false, nil, []string{scramSHA256, scramSHA256Plus}, scramSHA256, "n,,", false},
		{"nothing known", true, []byte{1}, []string{"OAUTHBEARER"}, "", "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := &authenticator{user: []byte("u"), password: []byte("pw"), tls: tt.tls, binding: tt.binding}
			reply, _, err := a.step(saslList(tt.offered...))
			if tt.wantFail {
				if err == nil || !strings.Contains(err.Error(), "OAUTHBEARER") {
					t.Fatalf("error %v", err)
				}
				return
			}
			var init pgproto3.SASLInitialResponse
			if err != nil || init.Decode(reply[5:]) != nil {
				t.Fatal(err)
			}
			if init.AuthMechanism != tt.mech || !strings.HasPrefix(string(init.Data), tt.gs2+"n=,r=") {
				t.Fatalf("%s %q", init.AuthMechanism, init.Data)
			}
		})
	}
}

// TestAuthRequests: cleartext only over TLS, md5's answer, and the
// methods the broker does not do.
func TestAuthRequests(t *testing.T) {
	a := &authenticator{user: []byte("u"), password: []byte("secret-pw")}
	if reply, _, err := a.step(authMsg(authCleartext, "")); !errors.Is(err, errCleartextWithoutTLS) || reply != nil {
		t.Fatalf("cleartext without TLS: %q, %v", reply, err)
	}
	a.tls = true
	if reply, _, err := a.step(authMsg(authCleartext, "")); err != nil || !bytes.Contains(reply, []byte("secret-pw\x00")) {
		t.Fatalf("cleartext over TLS: %q, %v", reply, err)
	}
	// PostgreSQL's md5 of password "secret-pw", user "u", salt 01020304:
	// "md5" + md5(md5("secret-pwu") in hex + salt) in hex.
	reply, _, err := (&authenticator{user: []byte("u"), password: []byte("secret-pw")}).step(authMsg(authMD5, "\x01\x02\x03\x04"))
	if err != nil || !bytes.Contains(reply, []byte(md5Password([]byte("u"), []byte("secret-pw"), []byte{1, 2, 3, 4})+"\x00")) || bytes.Contains(reply, []byte("secret-pw")) {
		t.Fatalf("md5: %q, %v", reply, err)
	}
	if got := md5Password([]byte("u"), []byte("secret-pw"), []byte{1, 2, 3, 4}); got != "md5"+md5Hex(md5Hex("secret-pwu")+"\x01\x02\x03\x04") {
		t.Fatalf("md5 answer %s", got)
	}
	for _, code := range []uint32{authKerberosV5, authGSS, authSSPI, 99} {
		if _, _, err := (&authenticator{}).step(authMsg(code, "")); err == nil || !strings.Contains(err.Error(), "scram-sha-256") {
			t.Errorf("method %d: %v", code, err)
		}
	}
}

// md5Hex is the hex MD5 of s, computed apart from the code under test.
func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// The SaltedPassword cache gives PBKDF2's answer, once per password, salt
// and count, and keeps different passwords apart.
func TestSaltedPasswordCache(t *testing.T) {
	c := &scramKeyCache{m: map[[sha256.Size]byte][]byte{}}
	salt := []byte("salt-of-role")
	want, err := pbkdf2.Key(sha256.New, "pencil", salt, 4096, sha256.Size)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		got, err := c.get([]byte("pencil"), salt, 4096)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("get = %x, %v; want %x", got, err, want)
		}
	}
	if len(c.m) != 1 {
		t.Fatalf("%d entries after two gets of one key", len(c.m))
	}
	other, _ := c.get([]byte("pencil2"), salt, 4096)
	fewer, _ := c.get([]byte("pencil"), salt, 4095)
	if bytes.Equal(other, want) || bytes.Equal(fewer, want) || len(c.m) != 3 {
		t.Fatalf("different passwords or counts share a key (%d entries)", len(c.m))
	}
}
