package postgres

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// suffixLen is the length of the random part of a role name: 10 base32
// characters, 50 bits.
const suffixLen = 10

// roleName derives an issued role's name from the workload subject:
// prefix, the subject lowercased with every run of characters outside
// [a-z0-9] made one underscore (cut to fit 63 bytes), an underscore, and
// suffix. suffix makes the name unique per issue.
func roleName(prefix, subject, suffix string) string {
	room := maxIdentifier - len(prefix) - 1 - len(suffix)
	var b strings.Builder
	b.Grow(maxIdentifier)
	b.WriteString(prefix)
	n := 0
	pending := false // an underscore owed before the next kept character
	for i := 0; i < len(subject) && n < room; i++ {
		ch := subject[i]
		if ch >= 'A' && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		if ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' {
			if pending && n > 0 {
				if n+2 > room {
					break
				}
				b.WriteByte('_')
				n++
			}
			pending = false
			b.WriteByte(ch)
			n++
			continue
		}
		pending = true
	}
	if n > 0 {
		b.WriteByte('_')
	}
	b.WriteString(suffix)
	return b.String()
}

// newSuffix returns suffixLen random characters from [a-z2-7].
func newSuffix() string {
	return strings.ToLower(rand.Text()[:suffixLen])
}

// leaseRole returns the role named by a lease id of this provider, after
// checking that it has the shape of a role this provider issues: the
// prefix, then only [a-z0-9_], at most 63 bytes. A lease id comes from the
// lease store, and the role it names is dropped: anything else is refused.
func leaseRole(prefix, id string) (string, error) {
	role, ok := strings.CutPrefix(id, Kind+":")
	if !ok {
		return "", fmt.Errorf("lease id %q is not a %s lease", id, Kind)
	}
	if !strings.HasPrefix(role, prefix) || len(role) <= len(prefix) || len(role) > maxIdentifier {
		return "", fmt.Errorf("lease id %q does not name a role with the prefix %q", id, prefix)
	}
	for i := 0; i < len(role); i++ {
		ch := role[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '_') {
			return "", fmt.Errorf("lease id %q does not name a role this provider issues", id)
		}
	}
	return role, nil
}

// newPassword returns a password of 32 random bytes, URL-safe base64 (43
// characters), which SASLprep leaves as it is.
func newPassword() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// scramIterations is the SCRAM-SHA-256 iteration count, PostgreSQL's
// default (scram_iterations).
const scramIterations = 4096

// scramVerifier returns the SCRAM-SHA-256 verifier PostgreSQL stores for
// password (RFC 5802, RFC 7677), as psql's \password computes it, so that
// the plaintext never reaches the server: "SCRAM-SHA-256$<iterations>:
// <salt>$<StoredKey>:<ServerKey>", base64. The password must already be in
// SASLprep normal form (ASCII without control characters is).
func scramVerifier(password string, salt []byte, iterations int) (string, error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", err
	}
	clientKey := hmacSHA256(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := hmacSHA256(salted, "Server Key")
	enc := base64.StdEncoding.EncodeToString
	return "SCRAM-SHA-256$" + strconv.Itoa(iterations) + ":" + enc(salt) + "$" + enc(storedKey[:]) + ":" + enc(serverKey), nil
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// quoteLiteral quotes s as an SQL string literal that reads the same with
// standard_conforming_strings on or off, as libpq's PQescapeLiteral does.
func quoteLiteral(s string) string {
	s = strings.ReplaceAll(s, "\x00", "")
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		q = "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q
}
