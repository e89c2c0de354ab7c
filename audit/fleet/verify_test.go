package fleet

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/internal/logtest"
)

// forwardedLog writes a log of n records with signed heads, forwards all
// of it and stops both; it returns the log's path and install id.
func forwardedLog(t *testing.T, db *fleetDB, n int) (string, string) {
	t.Helper()
	l := startLog(t, "", audit.Config{SignInterval: 10 * time.Millisecond})
	stop := runForwarder(t, Config{DSNFile: db.dsnFile, Source: l.path, Host: "h1", BatchSize: 16})
	t0 := time.Now().Add(-time.Hour)
	for i := range n {
		appendRecords(t, l.Log, i, 1, t0)
		if i%10 == 9 { // let a head be signed now and then
			signed := feedState(t, l.path).HeadSeq
			waitFor(t, "a signed head", func() bool {
				return lastKind(t, l.path) == audit.KindSignedHead || feedState(t, l.path).HeadSeq > signed
			})
		}
	}
	l.stop(t)
	db.waitForwarded(t, l.path)
	stop()
	return l.path, InstallID(l.PublicKey())
}

// lastKind returns the kind of a log's newest row.
func lastKind(t *testing.T, path string) string {
	t.Helper()
	kind := ""
	f, err := audit.OpenFeed(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.Rows(context.Background(), st.HeadSeq-1, 1, func(r *audit.StoredRow) error { kind = r.Kind; return nil })
	return kind
}

// verifyOne verifies one install.
func verifyOne(t *testing.T, db *fleetDB, install string) *InstallResult {
	t.Helper()
	res, err := db.open(t).Verify(context.Background(), VerifyOptions{Install: install})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 {
		t.Fatalf("%d results", len(res))
	}
	t.Log(res[0])
	return res[0]
}

// TestVerifyStoreTampering edits the store behind the forwarder's back
// and checks that Verify names what was done, install by install.
func TestVerifyStoreTampering(t *testing.T) {
	for _, c := range []struct {
		name  string
		edit  func(t *testing.T, db *fleetDB, install string)
		check func(t *testing.T, r *InstallResult)
	}{
		{"untouched", func(*testing.T, *fleetDB, string) {}, func(t *testing.T, r *InstallResult) {
			if !r.OK() || r.Checkpoints == 0 || r.Chain.SignedHeads == 0 || r.Chain.SignedSeq == 0 {
				t.Errorf("%s", r)
			}
		}},
		{"row edited", func(t *testing.T, db *fleetDB, id string) {
			db.srv.Exec(t, "UPDATE audit_rows SET reason = 'nothing to see' WHERE install_id = $1 AND seq = 7", id)
		}, func(t *testing.T, r *InstallResult) {
			if f := r.Chain.Failure; f == nil || f.Seq != 7 || f.Problem != audit.ProblemEdited {
				t.Errorf("%s", r)
			}
		}},
		{"row deleted", func(t *testing.T, db *fleetDB, id string) {
			db.srv.Exec(t, "DELETE FROM audit_rows WHERE install_id = $1 AND seq = 12", id)
		}, func(t *testing.T, r *InstallResult) {
			if f := r.Chain.Failure; f == nil || f.Seq != 13 || f.Problem != audit.ProblemLink {
				t.Errorf("%s", r)
			}
		}},
		{"newest rows deleted", func(t *testing.T, db *fleetDB, id string) {
			db.srv.Exec(t, "DELETE FROM audit_rows WHERE install_id = $1 AND seq > 20", id)
		}, func(t *testing.T, r *InstallResult) {
			if r.OK() || len(r.Forks) == 0 || r.Forks[0].StoredHash != "" || !strings.Contains(r.String(), "rows were deleted from the fleet store") {
				t.Errorf("%s", r)
			}
		}},
		{"forged checkpoint", func(t *testing.T, db *fleetDB, id string) {
			db.srv.Exec(t, `INSERT INTO audit_checkpoints (install_id, seq, hash, signed_ns, signature, host)
				VALUES ($1, 5, repeat('ab', 32), 1, repeat('00', 64), 'intruder')`, id)
		}, func(t *testing.T, r *InstallResult) {
			if r.OK() || r.Forged != 1 || len(r.Forks) != 0 || !strings.Contains(r.FirstForged, "intruder") {
				t.Errorf("%s", r)
			}
		}},
		{"key replaced", func(t *testing.T, db *fleetDB, id string) {
			pub, _, _ := ed25519.GenerateKey(rand.Reader)
			db.srv.Exec(t, "UPDATE audit_installs SET public_key = $2 WHERE install_id = $1", id, base64.StdEncoding.EncodeToString(pub))
		}, func(t *testing.T, r *InstallResult) {
			if r.OK() || !strings.Contains(r.KeyProblem, "not the install id") {
				t.Errorf("%s", r)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := newFleetDB(t)
			_, install := forwardedLog(t, db, 30)
			c.edit(t, db, install)
			c.check(t, verifyOne(t, db, install))
		})
	}
}

// TestVerifyPrunedBeforeForwarding prunes a log before forwarding starts,
// and again past rows not yet forwarded: the stored chain starts at the
// first anchor, the second bridges a gap Verify reports without failing,
// and the forwarder logs and counts the rows lost.
func TestVerifyPrunedBeforeForwarding(t *testing.T) {
	db := newFleetDB(t)
	l := startLog(t, "", audit.Config{SignInterval: -1})
	t0 := time.Now().Add(-100 * time.Hour)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	appendRecords(t, l.Log, 0, 100, t0)
	if _, err := audit.Prune(context.Background(), l.path, at(30), audit.PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	var logs logtest.Buffer
	reg := prometheus.NewRegistry()
	cfg := Config{DSNFile: db.dsnFile, Source: l.path, Host: "h", Logger: logs.Logger(), Registerer: reg}
	stop := runForwarder(t, cfg)
	appendRecords(t, l.Log, 100, 20, t0)
	db.waitForwarded(t, l.path)
	stop()

	appendRecords(t, l.Log, 120, 50, t0)
	if _, err := audit.Prune(context.Background(), l.path, at(150), audit.PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg.Registerer = prometheus.NewRegistry()
	runForwarder(t, cfg)
	l.stop(t)
	db.waitForwarded(t, l.path)

	r := verifyOne(t, db, InstallID(l.PublicKey()))
	if !r.OK() || len(r.Gaps) != 1 || r.Gaps[0].From != 121 || r.Gaps[0].To != 150 || r.Chain.Anchor == nil || r.Chain.Anchor.Seq != 31 || r.Chain.FirstSeq != 31 {
		t.Fatalf("%s", r)
	}
	if !strings.Contains(r.String(), "rows 121 to 150 pruned on the host before they were forwarded") {
		t.Errorf("%s", r)
	}
	if !strings.Contains(logs.String(), "pruned from the audit log before they were forwarded") || !strings.Contains(logs.String(), "rows=30") {
		t.Errorf("no warning of the rows lost:\n%s", logs.String())
	}
	if got := metricValue(t, cfg.Registerer.(*prometheus.Registry), "credbroker_audit_forward_pruned_unsent_rows_total"); got != 30 {
		t.Errorf("pruned unsent rows counted %v, want 30", got)
	}
}

// TestVerifyDetectsRewrite cuts a forwarded log short, restarts it (which
// records the override and signs its new head) and writes on: the
// forwarder sends it again from its start, the store keeps the first rows
// and the new checkpoints, and Verify reports the fork.
func TestVerifyDetectsRewrite(t *testing.T) {
	checkLeaks(t)
	db := newFleetDB(t)
	path, install := forwardedLog(t, db, 60)

	lite, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lite.Exec("DELETE FROM decisions WHERE seq > 30"); err != nil {
		t.Fatal(err)
	}
	lite.Close()
	l := startLog(t, path, audit.Config{AcceptRewind: true, SignInterval: -1})
	appendRecords(t, l.Log, 1000, 5, time.Now())
	l.stop(t)
	head := feedState(t, path).HeadSeq
	var newHash string // of the rewritten log's row that its last signed head signs
	f, err := audit.OpenFeed(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Rows(context.Background(), head-2, 1, func(r *audit.StoredRow) error { newHash = r.Hash; return nil })
	f.Close()

	var logs logtest.Buffer
	reg := prometheus.NewRegistry()
	runForwarder(t, Config{DSNFile: db.dsnFile, Source: path, Host: "h1", Logger: logs.Logger(), Registerer: reg})
	// The new log's last row is a signed head of the row before it: wait
	// for that checkpoint.
	waitFor(t, "the rewritten log's checkpoint", func() bool {
		return db.count(t, "SELECT count(*) FROM audit_checkpoints WHERE install_id = $1 AND seq = $2 AND hash = $3", install, head-1, newHash) > 0
	})
	r := verifyOne(t, db, install)
	if r.OK() || len(r.Forks) == 0 || !strings.Contains(r.String(), "cut short or rewritten") {
		t.Fatalf("%s", r)
	}
	if r.Chain.Failure != nil {
		t.Errorf("the stored chain itself is intact, yet: %v", r.Chain.Failure)
	}
	if !strings.Contains(logs.String(), "no longer holds the rows forwarded") {
		t.Errorf("no rewind logged:\n%s", logs.String())
	}
	if got := metricValue(t, reg, "credbroker_audit_forward_rewinds_total"); got != 1 {
		t.Errorf("rewinds %v", got)
	}
	if got := metricValue(t, reg, "credbroker_audit_forward_duplicate_rows_total"); got < 30 {
		t.Errorf("duplicates %v, want the 30 rows kept and more", got)
	}
}

// TestVerifyReplacedKey replaces a log and its key file: a new install,
// whose rows the store keeps apart, both verifying.
func TestVerifyReplacedKey(t *testing.T) {
	db := newFleetDB(t)
	path, first := forwardedLog(t, db, 12)
	for _, suffix := range []string{"", "-wal", "-shm", ".key", ".head"} {
		os.Remove(path + suffix)
	}
	l := startLog(t, path, audit.Config{SignInterval: -1})
	appendRecords(t, l.Log, 0, 5, time.Now())
	runForwarder(t, Config{DSNFile: db.dsnFile, Source: path, Host: "h1"})
	l.stop(t)
	db.waitForwarded(t, path)
	second := InstallID(l.PublicKey())
	res, err := db.open(t).Verify(context.Background(), VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || first == second {
		t.Fatalf("%d installs (%s, %s)", len(res), first, second)
	}
	for _, r := range res {
		if !r.OK() {
			t.Errorf("%s", r)
		}
	}
	_ = filepath.Join
}
