package replaydb_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/attest/aws"
	"github.com/credbroker/credbroker/attest/aws/replaydb"
	"github.com/credbroker/credbroker/attest/aws/ststest"
)

var t0 = time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)

func key(s string) aws.ReplayKey { return sha256.Sum256([]byte(s)) }

func open(t *testing.T, path string, max int) *replaydb.DB {
	t.Helper()
	db, err := replaydb.Open(context.Background(), replaydb.Config{Path: path, MaxEntries: max})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestReserve(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "replay.db")
	db := open(t, path, 0)
	for _, step := range []struct {
		name   string
		key    string
		expiry time.Duration
		now    time.Duration
		want   error
	}{
		{"first use", "a", 5 * time.Minute, 0, nil},
		{"replay", "a", 5 * time.Minute, time.Minute, aws.ErrReplay},
		{"replay at the last moment", "a", 5 * time.Minute, 5*time.Minute - time.Millisecond, aws.ErrReplay},
		{"another signature", "b", 5 * time.Minute, time.Minute, nil},
		{"expired, used again", "a", 10 * time.Minute, 5 * time.Minute, nil},
		{"and now a replay again", "a", 10 * time.Minute, 6 * time.Minute, aws.ErrReplay},
	} {
		if err := db.Reserve(ctx, key(step.key), t0.Add(step.expiry), t0.Add(step.now)); !errors.Is(err, step.want) || (err != nil && step.want == nil) {
			t.Errorf("%s: Reserve = %v, want %v", step.name, err, step.want)
		}
	}
	if err := db.Release(ctx, key("b")); err != nil {
		t.Fatal(err)
	}
	if err := db.Reserve(ctx, key("b"), t0.Add(5*time.Minute), t0.Add(time.Minute)); err != nil {
		t.Errorf("after Release: %v", err)
	}
}

// The point of the package: a restart forgets nothing unexpired.
func TestSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "replay.db")
	db, err := replaydb.Open(ctx, replaydb.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Reserve(ctx, key("a"), t0.Add(5*time.Minute), t0); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, path, 0)
	if err := db.Reserve(ctx, key("a"), t0.Add(5*time.Minute), t0.Add(time.Minute)); !errors.Is(err, aws.ErrReplay) {
		t.Fatalf("after reopening: %v, want a replay", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode: %v %v, want 0600", fi.Mode(), err)
	}
}

// Bounded: full of unexpired rows it refuses rather than forget one, a
// replay is still named a replay, and expiry makes room.
func TestFull(t *testing.T) {
	ctx := context.Background()
	db := open(t, filepath.Join(t.TempDir(), "replay.db"), 2)
	for _, k := range []string{"a", "b"} {
		if err := db.Reserve(ctx, key(k), t0.Add(time.Minute), t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Reserve(ctx, key("c"), t0.Add(time.Minute), t0); !errors.Is(err, aws.ErrReplayFull) {
		t.Errorf("third key: %v, want full", err)
	}
	if err := db.Reserve(ctx, key("a"), t0.Add(time.Minute), t0); !errors.Is(err, aws.ErrReplay) {
		t.Errorf("replay when full: %v, want replay", err)
	}
	if err := db.Reserve(ctx, key("c"), t0.Add(2*time.Minute), t0.Add(time.Minute)); err != nil {
		t.Errorf("after expiry: %v", err)
	}
}

// Of concurrent reservations of one key, exactly one succeeds.
func TestConcurrent(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "replay.db"), 0)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if db.Reserve(context.Background(), key("same"), t0.Add(time.Minute), t0) == nil {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d reservations succeeded, want 1", ok.Load())
	}
}

// A store that cannot write returns an error that is neither a replay nor
// full, so that the attestor refuses the request (fail closed).
func TestFailureIsAnError(t *testing.T) {
	ctx := context.Background()
	db, err := replaydb.Open(ctx, replaydb.Config{Path: filepath.Join(t.TempDir(), "replay.db")})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	err = db.Reserve(ctx, key("a"), t0.Add(time.Minute), t0)
	if err == nil || errors.Is(err, aws.ErrReplay) || errors.Is(err, aws.ErrReplayFull) {
		t.Fatalf("Reserve on a closed store = %v, want an error", err)
	}
}

// Another SQLite file (the audit log, say) is never taken over.
func TestRefusesOtherFiles(t *testing.T) {
	dir := t.TempDir()
	other := filepath.Join(dir, "audit.db")
	sdb, err := sql.Open("sqlite", other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sdb.Exec("CREATE TABLE decisions (seq INTEGER)"); err != nil {
		t.Fatal(err)
	}
	sdb.Close()
	newer := filepath.Join(dir, "newer.db")
	open(t, newer, 0).Close()
	sdb, _ = sql.Open("sqlite", newer)
	if _, err := sdb.Exec("PRAGMA user_version = 9"); err != nil {
		t.Fatal(err)
	}
	sdb.Close()
	for path, want := range map[string]string{other: "not a credbroker replay database", newer: "newer than this credbroker's", dir: "replaydb"} {
		if _, err := replaydb.Open(context.Background(), replaydb.Config{Path: path}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%s) = %v, want %q", filepath.Base(path), err, want)
		}
	}
	if err := (replaydb.Config{MaxEntries: -1}).Validate(); err == nil || !strings.Contains(err.Error(), "path is required") || !strings.Contains(err.Error(), "max entries") {
		t.Errorf("Validate = %v", err)
	}
}

// TestAttestorAcrossRestart: a signed request the attestor accepted, sent
// again to a new attestor on the same file, is a replay — and the file
// holds neither the signature nor the request.
func TestAttestorAcrossRestart(t *testing.T) {
	sts := ststest.New(t)
	id, secret, token := sts.AddKey("arn:aws:sts::123456789012:assumed-role/payments/s", "AROAX:s", "123456789012", true)
	path := filepath.Join(t.TempDir(), "replay.db")
	now := func() time.Time { return t0.Add(time.Minute) }
	newAttestor := func(db *replaydb.DB) *aws.Attestor {
		a, err := aws.New(aws.Config{ServerID: "credbroker.test", STSEndpoint: sts.Server.URL, HTTPClient: sts.Server.Client(), Now: now, Replay: db})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	r, err := aws.Sign(context.Background(), credentials.NewStaticCredentialsProvider(id, secret, token), "credbroker.test", "", sts.Server.URL, t0)
	if err != nil {
		t.Fatal(err)
	}

	db, err := replaydb.Open(context.Background(), replaydb.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newAttestor(db).Attest(context.Background(), r); err != nil {
		t.Fatalf("first use: %v", err)
	}
	db.Close()

	_, err = newAttestor(open(t, path, 0)).Attest(context.Background(), r)
	var ae *attest.Error
	if !errors.As(err, &ae) || ae.Reason != "replay" {
		t.Fatalf("after a restart: %v, want a replay", err)
	}

	sig := http.Header(r.Headers).Get("Authorization")
	sig = sig[strings.LastIndex(sig, "=")+1:]
	rawSig, _ := hex.DecodeString(sig)
	for _, f := range []string{path, path + "-wal"} {
		raw, _ := os.ReadFile(f)
		if bytes.Contains(raw, []byte(sig)) || bytes.Contains(raw, rawSig) || bytes.Contains(raw, []byte(token)) || bytes.Contains(raw, []byte(r.Headers[aws.NonceHeader][0])) {
			t.Errorf("%s holds the signature or the request", filepath.Base(f))
		}
	}
}
