package mysql

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"filippo.io/edwards25519"
)

// caching_sha2_password's one-byte messages.
const (
	sha2RequestPublicKey = 0x02 // client: send me your RSA public key
	sha2FastAuthOK       = 0x03 // server: the scramble matched its cache
	sha2FullAuth         = 0x04 // server: send the password itself
	sha256RequestKey     = 0x01 // sha256_password client: send me your key
)

// maxAuthRounds bounds the packets of one authentication exchange after
// the handshake response: a switch, a key request, the key, the
// encrypted password and the result fit in it.
const maxAuthRounds = 8

// errAuthFormat is a packet of the upstream's that is not what the
// authentication exchange allows at that point.
var errAuthFormat = errors.New("the upstream sent an authentication packet the exchange does not allow here")

// authenticator is the listener's side of one upstream login with the
// issued user and password: the response to the greeting, then one reply
// per packet of the upstream's, until its OK. It never sends the password
// in the clear unless the connection is TLS (secure), and never keeps or
// prints it.
type authenticator struct {
	password []byte // the issued password; not to be logged
	secure   bool   // the upstream connection is TLS

	plugin   string // the plugin in use
	scramble []byte // the nonce of the plugin in use
	switched bool   // an AuthSwitchRequest has been answered
	keyAsked bool   // an RSA public key has been asked for
	rounds   int
}

// start returns the plugin and the response to put in the handshake
// response for the upstream's greeting. An unknown or absent plugin is
// answered with mysql_native_password, which the upstream either accepts
// or switches from.
func (a *authenticator) start(plugin string, scramble []byte) (string, []byte, error) {
	switch plugin {
	case pluginCachingSHA2, pluginNative, pluginSHA256:
	default:
		plugin = pluginNative
	}
	a.plugin, a.scramble = plugin, scramble
	resp, err := a.respond()
	return plugin, resp, err
}

// respond computes the first response of the plugin in use to its nonce.
func (a *authenticator) respond() ([]byte, error) {
	switch a.plugin {
	case pluginNative:
		if len(a.scramble) < scrambleLen {
			return nil, fmt.Errorf("%s: the upstream's nonce is %d bytes, want %d", pluginNative, len(a.scramble), scrambleLen)
		}
		return scrambleNative(a.scramble[:scrambleLen], a.password), nil
	case pluginCachingSHA2:
		return scrambleSHA256(a.scramble, a.password), nil
	case pluginSHA256:
		switch {
		case len(a.password) == 0:
			return []byte{0}, nil
		case a.secure:
			return cleartext(a.password), nil
		default:
			a.keyAsked = true
			return []byte{sha256RequestKey}, nil
		}
	case pluginEd25519:
		if len(a.scramble) != 32 {
			return nil, fmt.Errorf("%s: the upstream's nonce is %d bytes, want 32", pluginEd25519, len(a.scramble))
		}
		return signEd25519(a.scramble, a.password)
	case pluginClearPassword:
		if !a.secure {
			return nil, errors.New("the upstream asks for the password in the clear (mysql_clear_password) on a connection without TLS; refused: set tls.mode to require or verify-*")
		}
		return cleartext(a.password), nil
	}
	return nil, fmt.Errorf("the upstream asks for the authentication plugin %q, which the listener does not speak (it speaks %s, %s, %s, %s and, over TLS, %s)",
		a.plugin, pluginNative, pluginCachingSHA2, pluginSHA256, pluginEd25519, pluginClearPassword)
}

// next handles one packet of the upstream's after a response was sent.
// done reports its OK; reply, when not nil, is the next packet to send.
// An ERR packet is returned as a *sqlError.
func (a *authenticator) next(pkt []byte) (reply []byte, done bool, err error) {
	if a.rounds++; a.rounds > maxAuthRounds {
		return nil, false, errors.New("the upstream's authentication exchange goes on too long")
	}
	if len(pkt) == 0 {
		return nil, false, errAuthFormat
	}
	switch pkt[0] {
	case pktOK:
		return nil, true, nil
	case pktERR:
		return nil, false, parseErr(pkt)
	case pktAuthSwitch:
		return a.switchTo(pkt[1:])
	case pktMoreData:
		reply, err := a.moreData(pkt[1:])
		return reply, false, err
	}
	return nil, false, errAuthFormat
}

// switchTo answers an AuthSwitchRequest: the plugin's name, NUL, its
// nonce (with a trailing NUL that is not part of it).
func (a *authenticator) switchTo(body []byte) ([]byte, bool, error) {
	if a.switched {
		return nil, false, errors.New("the upstream asked to switch authentication plugins twice")
	}
	a.switched, a.keyAsked = true, false
	if len(body) == 0 {
		return nil, false, errors.New("the upstream asks for mysql_old_password (before MySQL 4.1), which is refused")
	}
	r := reader{b: body}
	name, err := r.nulString()
	if err != nil {
		return nil, false, fmt.Errorf("an authentication switch request: %w", err)
	}
	a.plugin = string(clean(name))
	nonce := r.b
	// MySQL's nonces end with a NUL that is not part of them; MariaDB's
	// client_ed25519 nonce is 32 random bytes, whose last may be 0.
	if len(nonce) > 0 && nonce[len(nonce)-1] == 0 && (a.plugin != pluginEd25519 || len(nonce) == 33) {
		nonce = nonce[:len(nonce)-1]
	}
	a.scramble = append([]byte(nil), nonce...)
	resp, err := a.respond()
	if err != nil {
		return nil, false, err
	}
	if resp == nil {
		resp = []byte{} // an empty password is an empty packet, still sent
	}
	return resp, false, nil
}

// moreData answers an AuthMoreData packet of caching_sha2_password or
// sha256_password.
func (a *authenticator) moreData(data []byte) ([]byte, error) {
	switch a.plugin {
	case pluginCachingSHA2:
		if a.keyAsked {
			return a.encrypted(data)
		}
		if len(data) != 1 {
			return nil, errAuthFormat
		}
		switch data[0] {
		case sha2FastAuthOK:
			return nil, nil // its OK follows
		case sha2FullAuth:
			if a.secure {
				return cleartext(a.password), nil
			}
			a.keyAsked = true
			return []byte{sha2RequestPublicKey}, nil
		}
	case pluginSHA256:
		if a.keyAsked {
			return a.encrypted(data)
		}
	}
	return nil, errAuthFormat
}

// encrypted answers the upstream's RSA public key (PEM) with the password
// encrypted to it, as both SHA-256 plugins do without TLS: RSA-OAEP with
// SHA-1 over the NUL-terminated password XORed with the nonce.
func (a *authenticator) encrypted(pemKey []byte) ([]byte, error) {
	a.keyAsked = false
	if len(a.scramble) == 0 {
		return nil, errors.New("the upstream sent no nonce to encrypt the password with")
	}
	block, _ := pem.Decode(pemKey)
	if block == nil {
		return nil, errors.New("the upstream's public key is not PEM")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the upstream's public key: %w", err)
	}
	pub, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("the upstream's public key is a %T, not RSA", key)
	}
	if pub.Size() < 2048/8 {
		return nil, fmt.Errorf("the upstream's RSA key has %d bits: want 2048 or more", pub.N.BitLen())
	}
	plain := cleartext(a.password)
	defer clear(plain)
	for i := range plain {
		plain[i] ^= a.scramble[i%len(a.scramble)]
	}
	out, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, plain, nil)
	if err != nil {
		return nil, fmt.Errorf("encrypting the password to the upstream's key: %w", err)
	}
	return out, nil
}

// cleartext returns a copy of the password with a NUL appended.
func cleartext(password []byte) []byte {
	return append(bytes.Clone(password), 0)
}

// scrambleNative is mysql_native_password's response:
// SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password))); empty for an
// empty password.
func scrambleNative(nonce, password []byte) []byte {
	if len(password) == 0 {
		return nil
	}
	stage1 := sha1.Sum(password)
	stage2 := sha1.Sum(stage1[:])
	h := sha1.New()
	h.Write(nonce)
	h.Write(stage2[:])
	out := h.Sum(nil)
	for i := range out {
		out[i] ^= stage1[i]
	}
	return out
}

// scrambleSHA256 is caching_sha2_password's response:
// SHA256(password) XOR SHA256(SHA256(SHA256(password)) + nonce); empty for
// an empty password.
func scrambleSHA256(nonce, password []byte) []byte {
	if len(password) == 0 {
		return nil
	}
	m1 := sha256.Sum256(password)
	m1h := sha256.Sum256(m1[:])
	h := sha256.New()
	h.Write(m1h[:])
	h.Write(nonce)
	out := h.Sum(nil)
	for i := range out {
		out[i] ^= m1[i]
	}
	return out
}

// signEd25519 is MariaDB's client_ed25519 response: an Ed25519 signature
// of the nonce with the key whose seed hash is SHA512(password) (ref10's
// crypto_sign with the password in place of the 32-byte seed, as
// MariaDB's plugin/auth_ed25519 does).
func signEd25519(nonce, password []byte) ([]byte, error) {
	h := sha512.Sum512(password)
	defer clear(h[:])
	s, err := edwards25519.NewScalar().SetBytesWithClamping(h[:32])
	if err != nil {
		return nil, err
	}
	pub := new(edwards25519.Point).ScalarBaseMult(s)
	mh := sha512.New()
	mh.Write(h[32:])
	mh.Write(nonce)
	r, err := edwards25519.NewScalar().SetUniformBytes(mh.Sum(nil))
	if err != nil {
		return nil, err
	}
	R := new(edwards25519.Point).ScalarBaseMult(r)
	kh := sha512.New()
	kh.Write(R.Bytes())
	kh.Write(pub.Bytes())
	kh.Write(nonce)
	k, err := edwards25519.NewScalar().SetUniformBytes(kh.Sum(nil))
	if err != nil {
		return nil, err
	}
	S := edwards25519.NewScalar().MultiplyAdd(k, s, r)
	return append(R.Bytes(), S.Bytes()...), nil
}
