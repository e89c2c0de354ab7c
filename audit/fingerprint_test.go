package audit

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestFingerprint(t *testing.T) {
	dir := t.TempDir()
	open := func(name string) *testLog {
		return startLog(t, Config{Path: filepath.Join(dir, name+".db"), KeyFile: filepath.Join(dir, name+".key")})
	}
	secret := []byte("s3cr3t-password")
	a := open("a")
	fa := a.Fingerprint(secret)
	if !regexp.MustCompile(`^hmac-sha256:[0-9a-f]{64}$`).MatchString(fa) {
		t.Errorf("Fingerprint = %q, want hmac-sha256:<64 hex>", fa)
	}
	if a.Fingerprint([]byte("other")) == fa {
		t.Error("different secrets share a fingerprint")
	}
	a.stop(t)
	fi, err := os.Stat(filepath.Join(dir, "a.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if again := open("a"); again.Fingerprint(secret) != fa {
		t.Error("fingerprint changed across opens of the same key file")
	}
	if b := open("b"); b.Fingerprint(secret) == fa {
		t.Error("two key files give the same fingerprint")
	}
}

// TestSecretNeverStored feeds a canary secret through Fingerprint and
// Append and greps the database, its WAL and the logs for it.
func TestSecretNeverStored(t *testing.T) {
	canary := "CANARY-7f3a9c1e-do-not-store"
	logger, logs := captureLogs()
	l := startLog(t, Config{Logger: logger})
	for i := range 20 {
		r := testRecord(i, t0)
		r.Fingerprint = l.Fingerprint([]byte(canary))
		if err := l.Append(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	fp := []byte(l.Fingerprint([]byte(canary)))
	check := func(when string) {
		found := false
		for _, name := range []string{l.cfg.Path, l.cfg.Path + "-wal"} {
			data, err := os.ReadFile(name)
			if err != nil {
				if when == "open" || !os.IsNotExist(err) {
					t.Fatalf("%s: %v", when, err)
				}
				continue
			}
			if bytes.Contains(data, []byte(canary)) {
				t.Errorf("%s: %s contains the secret", when, name)
			}
			found = found || bytes.Contains(data, fp)
		}
		if !found {
			t.Errorf("%s: the fingerprint is in no file, so the search proves nothing", when)
		}
	}
	check("open")
	l.stop(t)
	check("closed")
	if strings.Contains(logs.String(), canary) {
		t.Error("logs contain the secret")
	}
}
