package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// PEM block types of the key file and of an exported public key.
const (
	pemHMACKey    = "CREDBROKER AUDIT HMAC KEY"
	pemPrivateKey = "PRIVATE KEY" // PKCS #8, Ed25519
	pemPublicKey  = "PUBLIC KEY"  // PKIX, Ed25519
)

// fingerprintPrefix names the algorithm of Log.Fingerprint values.
const fingerprintPrefix = "hmac-sha256:"

// keys are the per-install secrets of one audit log: an HMAC key for secret
// fingerprints and an Ed25519 key for checkpoints and prune anchors.
type keys struct {
	mac  []byte
	sign ed25519.PrivateKey
	macs sync.Pool // of hash.Hash: HMACs keyed with mac, reset before reuse
}

// createKeys creates the key file (mode 0600) with fresh keys. It fails
// with fs.ErrExist when the file already exists.
func createKeys(path string) (*keys, error) {
	mac := make([]byte, 32)
	rand.Read(mac)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("audit: key file %s: %w", path, err)
	}
	k := &keys{mac: mac, sign: priv}
	data, err := k.marshal()
	if err != nil {
		return nil, fmt.Errorf("audit: key file %s: %w", path, err)
	}
	if err := createFile(path, data); err != nil {
		return nil, fmt.Errorf("audit: key file %s: %w", path, err)
	}
	return k, nil
}

// readKeys reads and parses a key file.
func readKeys(path string) (*keys, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit: key file: %w", err)
	}
	k, err := parseKeys(data)
	if err != nil {
		return nil, fmt.Errorf("audit: key file %s: %w", path, err)
	}
	return k, nil
}

// parseKeys parses the PEM blocks of a key file.
func parseKeys(data []byte) (*keys, error) {
	k := &keys{}
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		switch b.Type {
		case pemHMACKey:
			k.mac = b.Bytes
		case pemPrivateKey:
			key, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, err
			}
			priv, ok := key.(ed25519.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("private key is %T, want Ed25519", key)
			}
			k.sign = priv
		}
	}
	if len(k.mac) < 32 || k.sign == nil {
		return nil, errors.New("want a " + pemHMACKey + " of 32 bytes and an Ed25519 " + pemPrivateKey)
	}
	return k, nil
}

// marshal encodes the keys as PEM blocks.
func (k *keys) marshal() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.sign)
	if err != nil {
		return nil, err
	}
	b := pem.EncodeToMemory(&pem.Block{Type: pemHMACKey, Bytes: k.mac})
	return append(b, pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der})...), nil
}

// public returns the Ed25519 public key.
func (k *keys) public() ed25519.PublicKey {
	return k.sign.Public().(ed25519.PublicKey)
}

// fingerprint returns the HMAC-SHA256 of secret under the install's key.
func (k *keys) fingerprint(secret []byte) string {
	m, ok := k.macs.Get().(hash.Hash)
	if !ok {
		m = hmac.New(sha256.New, k.mac)
	}
	m.Write(secret)
	var sum [sha256.Size]byte
	var out [len(fingerprintPrefix) + 2*sha256.Size]byte
	copy(out[:], fingerprintPrefix)
	hex.Encode(out[len(fingerprintPrefix):], m.Sum(sum[:0]))
	m.Reset()
	k.macs.Put(m)
	return string(out[:])
}

// PublicKeyFromFile returns the Ed25519 public key of a key file, the one
// that verifies the checkpoints and prune anchors of its log.
func PublicKeyFromFile(keyFile string) (ed25519.PublicKey, error) {
	k, err := readKeys(keyFile)
	if err != nil {
		return nil, err
	}
	return k.public(), nil
}

// WritePublicKey writes the public key of keyFile to out as a PEM "PUBLIC
// KEY" block (mode 0644), for verifiers who must not hold the private key:
// `credbroker audit verify --public-key out`.
func WritePublicKey(keyFile, out string) error {
	pub, err := PublicKeyFromFile(keyFile)
	if err != nil {
		return err
	}
	data, err := EncodePublicKey(pub)
	if err != nil {
		return err
	}
	if err := replaceFile(out, data, 0o644); err != nil {
		return fmt.Errorf("audit: write public key: %w", err)
	}
	return nil
}

// EncodePublicKey encodes pub as a PEM "PUBLIC KEY" block (PKIX), the form
// openssl and ParsePublicKey read.
func EncodePublicKey(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("audit: public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: der}), nil
}

// ParsePublicKey parses an Ed25519 public key given as a PEM "PUBLIC KEY"
// block (PKIX) or as the base64 of its 32 bytes, as in a checkpoint file.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	data = bytes.TrimSpace(data)
	if b, _ := pem.Decode(data); b != nil {
		if b.Type != pemPublicKey {
			return nil, fmt.Errorf("audit: public key: PEM block is %q, want %q", b.Type, pemPublicKey)
		}
		key, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("audit: public key: %w", err)
		}
		pub, ok := key.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("audit: public key is %T, want Ed25519", key)
		}
		return pub, nil
	}
	raw, err := base64.StdEncoding.DecodeString(string(data))
	if err != nil {
		return nil, fmt.Errorf("audit: public key: neither PEM nor base64: %w", err)
	}
	if len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("audit: public key: %d bytes, want %d", len(raw), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(raw), nil
}

// createFile creates path with data (mode 0600) atomically: it appears
// complete or not at all, and fs.ErrExist is returned when it already exists.
func createFile(path string, data []byte) error {
	tmp, err := writeTemp(path, data, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	return syncDir(path)
}

// replaceFile writes data to path atomically (temp file and rename).
func replaceFile(path string, data []byte, perm fs.FileMode) error {
	tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(path)
}

// writeTemp writes data to a new, synced temporary file beside path.
func writeTemp(path string, data []byte, perm fs.FileMode) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// syncDir makes a new directory entry for path durable.
func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
