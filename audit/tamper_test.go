package audit

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"database/sql/driver"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, a second, independent connection
)

// fixture is a closed audit log of n rows with a final checkpoint.
type fixture struct {
	path, checkpoint string
	pub              ed25519.PublicKey
	recs             []*Record
}

func newFixture(t *testing.T, n int) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{path: filepath.Join(dir, "audit.db"), checkpoint: filepath.Join(dir, "checkpoint.json")}
	l := startLog(t, Config{Path: f.path, Checkpoint: CheckpointConfig{File: f.checkpoint, Interval: time.Hour}})
	f.recs = appendN(t, l.Log, n, t0)
	f.pub = l.PublicKey()
	l.stop(t)
	return f
}

// copyDB copies the database (and its WAL, if any) to a new directory, so
// each case tampers with its own copy.
func (f *fixture) copyDB(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "audit.db")
	for _, suffix := range []string{"", "-wal"} {
		data, err := os.ReadFile(f.path + suffix)
		if errors.Is(err, os.ErrNotExist) && suffix != "" {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst+suffix, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// sqlExec runs statements on path through database/sql, as someone with
// the sqlite3 shell would.
func sqlExec(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// rechain recomputes prev_hash and hash of every row from seq from on, as
// an attacker who knows the algorithm would after editing a row.
func rechain(t *testing.T, path string, from int64) {
	t.Helper()
	c, err := openConn(path, modeReadWrite, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	var rows []row
	err = eachRow(context.Background(), c, "SELECT "+columns+" FROM decisions WHERE seq >= ? ORDER BY seq", []any{from - 1}, func(v []driver.Value) error {
		var rw row
		if err := rw.scan(v); err != nil {
			return err
		}
		rows = append(rows, rw)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	prev, err := parseHash(rows[0].hash)
	if err != nil {
		t.Fatal(err)
	}
	head := chainHead{seq: rows[0].seq, hash: prev}
	w := &writer{}
	for i := range rows[1:] {
		rw := &rows[i+1]
		head = w.chain(head, rw)
		if err := c.exec("UPDATE decisions SET prev_hash = ?, hash = ? WHERE seq = ?", rw.prevHash, rw.hash, rw.seq); err != nil {
			t.Fatal(err)
		}
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	f := newFixture(t, 10)
	swapSeq := func(a, b string) []string {
		return []string{
			"UPDATE decisions SET seq = -1 WHERE seq = " + a,
			"UPDATE decisions SET seq = " + a + " WHERE seq = " + b,
			"UPDATE decisions SET seq = " + b + " WHERE seq = -1",
		}
	}
	tests := []struct {
		name       string
		tamper     func(t *testing.T, path string)
		checkpoint bool // only the checkpoint catches it: without one the log verifies
		noKey      bool // verify without any trusted key
		wantSeq    int64
		wantID     string
		wantProb   Problem
		wantDetail string
	}{
		{
			name:    "edit a field",
			tamper:  func(t *testing.T, p string) { sqlExec(t, p, "UPDATE decisions SET decision = 'deny' WHERE seq = 5") },
			wantSeq: 5, wantID: "dec-00000004", wantProb: ProblemEdited,
		},
		{
			name: "edit claims",
			tamper: func(t *testing.T, p string) {
				sqlExec(t, p, `UPDATE decisions SET claims = replace(claims, 'payments', 'billing') WHERE seq = 2`)
			},
			wantSeq: 2, wantID: "dec-00000001", wantProb: ProblemEdited,
		},
		{
			name: "edit a field and recompute its hash",
			tamper: func(t *testing.T, p string) {
				sqlExec(t, p, "UPDATE decisions SET subject = 'unix:uid:0' WHERE seq = 5")
				c, err := openConn(p, modeReadWrite, time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer c.close()
				var rw row
				if err := eachRow(context.Background(), c, "SELECT "+columns+" FROM decisions WHERE seq = 5", nil, func(v []driver.Value) error { return rw.scan(v) }); err != nil {
					t.Fatal(err)
				}
				prev, _ := parseHash(rw.prevHash)
				(&writer{}).chain(chainHead{seq: 4, hash: prev}, &rw)
				if err := c.exec("UPDATE decisions SET hash = ? WHERE seq = 5", rw.hash); err != nil {
					t.Fatal(err)
				}
			},
			wantSeq: 6, wantID: "dec-00000005", wantProb: ProblemLink, wantDetail: "prev_hash",
		},
		{
			name:    "delete a row",
			tamper:  func(t *testing.T, p string) { sqlExec(t, p, "DELETE FROM decisions WHERE seq = 5") },
			wantSeq: 6, wantID: "dec-00000005", wantProb: ProblemLink, wantDetail: "rows 5 to 5 are missing",
		},
		{
			name: "insert a row in the middle",
			tamper: func(t *testing.T, p string) {
				sqlExec(t, p,
					"UPDATE decisions SET seq = -(seq + 1) WHERE seq >= 5",
					"UPDATE decisions SET seq = -seq WHERE seq < 0",
					"INSERT INTO decisions SELECT 5, time, 'forged', decision, reason, policy, policy_version, attestor, subject, claims, peer_pid, peer_uid, credential, provider, channel, target_host, method, path, lease_id, expires_at, fingerprint, latency_ns, input, prev_hash, hash, kind, database, upstream_user FROM decisions WHERE seq = 4")
			},
			wantSeq: 5, wantID: "forged", wantProb: ProblemLink, wantDetail: "prev_hash",
		},
		{
			name: "insert a row and rechain everything after it",
			tamper: func(t *testing.T, p string) {
				sqlExec(t, p,
					"UPDATE decisions SET seq = -(seq + 1) WHERE seq >= 5",
					"UPDATE decisions SET seq = -seq WHERE seq < 0",
					"INSERT INTO decisions SELECT 5, time, 'forged', decision, reason, policy, policy_version, attestor, subject, claims, peer_pid, peer_uid, credential, provider, channel, target_host, method, path, lease_id, expires_at, fingerprint, latency_ns, input, prev_hash, hash, kind, database, upstream_user FROM decisions WHERE seq = 4")
				rechain(t, p, 5)
			},
			// The signed head the log ends with (now seq 12) signed the old seq 10.
			wantSeq: 12, wantProb: ProblemSignedHead, wantDetail: "a row from seq 1 to 11 was rewritten after it was signed",
		},
		{
			name: "rewrite a row and recompute every hash without the key",
			tamper: func(t *testing.T, p string) {
				sqlExec(t, p, "UPDATE decisions SET decision = 'deny', subject = 'unix:uid:0' WHERE seq = 5")
				rechain(t, p, 5)
			},
			wantSeq: 11, wantProb: ProblemSignedHead, wantDetail: "but the log's seq 10 now hashes to",
		},
		{
			name: "rewrite a row, recompute every hash and re-aim the signed heads without the key",
			tamper: func(t *testing.T, p string) {
				sqlExec(t, p, "UPDATE decisions SET decision = 'deny' WHERE seq = 5")
				rechain(t, p, 5)
				reaimSignedHeads(t, p)
			},
			wantSeq: 11, wantProb: ProblemSignedHead, wantDetail: "signature does not verify",
		},
		{
			name:    "reorder two rows",
			tamper:  func(t *testing.T, p string) { sqlExec(t, p, swapSeq("3", "7")...) },
			wantSeq: 3, wantID: "dec-00000006", wantProb: ProblemLink, wantDetail: "prev_hash",
		},
		{
			name:    "delete the first row",
			tamper:  func(t *testing.T, p string) { sqlExec(t, p, "DELETE FROM decisions WHERE seq = 1") },
			wantSeq: 2, wantID: "dec-00000001", wantProb: ProblemLink, wantDetail: "never pruned",
		},
		{
			name:       "cut off newest rows",
			tamper:     func(t *testing.T, p string) { sqlExec(t, p, "DELETE FROM decisions WHERE seq > 7") },
			checkpoint: true,
			wantSeq:    10, wantProb: ProblemTruncated, wantDetail: "ends at seq 7",
		},
		{
			name:       "cut off every row",
			tamper:     func(t *testing.T, p string) { sqlExec(t, p, "DELETE FROM decisions") },
			checkpoint: true,
			wantSeq:    10, wantProb: ProblemTruncated, wantDetail: "ends at seq 0",
		},
		{
			name:    "store a value of the wrong type",
			tamper:  func(t *testing.T, p string) { sqlExec(t, p, "UPDATE decisions SET expires_at = NULL WHERE seq = 4") },
			wantSeq: 4, wantID: "dec-00000003", wantProb: ProblemEdited,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := f.copyDB(t)
			tt.tamper(t, path)
			opts := VerifyOptions{PublicKey: f.pub}
			for _, id := range []*string{&tt.wantID} {
				if *id == "" && tt.wantProb == ProblemSignedHead {
					*id = signedHeadID(t, path, tt.wantSeq)
				}
			}
			if tt.checkpoint {
				// Without the checkpoint, what is left is a valid chain.
				if _, err := Verify(context.Background(), path, opts); err != nil {
					t.Fatalf("Verify without checkpoint: %v", err)
				}
				opts.Checkpoint = f.checkpoint
			}
			res, err := Verify(context.Background(), path, opts)
			if !errors.Is(err, ErrTampered) {
				t.Fatalf("Verify = %v, want ErrTampered", err)
			}
			var fail *Failure
			if !errors.As(err, &fail) || fail != res.Failure {
				t.Fatalf("error %v is not the result's Failure %v", err, res.Failure)
			}
			if !strings.HasPrefix(res.String(), "FAILED after ") || !strings.Contains(res.String(), fail.Detail) {
				t.Errorf("String() = %q", res)
			}
			if fail.Seq != tt.wantSeq || fail.DecisionID != tt.wantID || fail.Problem != tt.wantProb || !strings.Contains(fail.Detail, tt.wantDetail) {
				t.Errorf("Failure = seq %d id %q %v %q; want seq %d id %q %v containing %q",
					fail.Seq, fail.DecisionID, fail.Problem, fail.Detail, tt.wantSeq, tt.wantID, tt.wantProb, tt.wantDetail)
			}
		})
	}
}

func TestVerifyCheckpoint(t *testing.T) {
	f := newFixture(t, 6)
	otherPub, _, _ := ed25519.GenerateKey(nil)
	cpData, err := os.ReadFile(f.checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	write := func(t *testing.T, data string) string {
		p := filepath.Join(t.TempDir(), "cp.json")
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name       string
		opts       func(t *testing.T) VerifyOptions
		wantErr    error // nil, ErrTampered, or errAny
		wantDetail string
	}{
		{"pinned key", func(t *testing.T) VerifyOptions {
			return VerifyOptions{Checkpoint: f.checkpoint, PublicKey: f.pub}
		}, nil, ""},
		{"key from key file", func(t *testing.T) VerifyOptions {
			return VerifyOptions{Checkpoint: f.checkpoint}
		}, nil, ""},
		{"public key file written for verifiers", func(t *testing.T) VerifyOptions {
			out := filepath.Join(t.TempDir(), "audit.pub")
			if err := WritePublicKey(f.path+".key", out); err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(out)
			pub, err := ParsePublicKey(data)
			if err != nil {
				t.Fatal(err)
			}
			return VerifyOptions{Checkpoint: f.checkpoint, PublicKey: pub, KeyFile: "/nonexistent"}
		}, nil, ""},
		{"wrong pinned key", func(t *testing.T) VerifyOptions {
			return VerifyOptions{Checkpoint: f.checkpoint, PublicKey: otherPub}
		}, ErrTampered, "names a different key"},
		{"checkpoint seq edited", func(t *testing.T) VerifyOptions {
			return VerifyOptions{Checkpoint: write(t, strings.Replace(string(cpData), `"seq":6`, `"seq":5`, 1)), PublicKey: f.pub}
		}, ErrTampered, "signature"},
		{"no key anywhere", func(t *testing.T) VerifyOptions {
			return VerifyOptions{Checkpoint: f.checkpoint, KeyFile: filepath.Join(t.TempDir(), "none.key")}
		}, errAny, "public key is needed"},
		{"malformed checkpoint", func(t *testing.T) VerifyOptions {
			return VerifyOptions{Checkpoint: write(t, `{"seq":1}`), PublicKey: f.pub}
		}, errAny, "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Verify(context.Background(), f.path, tt.opts(t))
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("Verify: %v", err)
			case tt.wantErr == nil:
				// Six decisions, then the signed head of seq 6 written at shutdown.
				if res.Checkpoint == nil || res.Checkpoint.Seq != 6 || res.HeadSeq != 7 || res.SignedSeq != 6 {
					t.Errorf("result %+v, want checkpoint at seq 6, a signed head of it at seq 7", res)
				}
				if want := "ok: 7 rows verified (6 decisions), head seq 7 hash "; !strings.HasPrefix(res.String(), want) || !strings.Contains(res.String(), "; reaches the checkpoint at seq 6 of ") {
					t.Errorf("String() = %q, want prefix %q and the checkpoint", res, want)
				}
			case tt.wantErr == ErrTampered && !errors.Is(err, ErrTampered):
				t.Fatalf("Verify = %v, want ErrTampered", err)
			case err == nil:
				t.Fatal("Verify succeeded")
			case !strings.Contains(err.Error(), tt.wantDetail):
				t.Errorf("Verify = %v, want it to mention %q", err, tt.wantDetail)
			}
		})
	}
}

// signedHeadID returns the decision id of the row at seq.
func signedHeadID(t *testing.T, path string, seq int64) string {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var id string
	if err := db.QueryRow("SELECT decision_id FROM decisions WHERE seq = ?", seq).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// reaimSignedHeads rewrites each signed head's checkpoint to name the hash
// now before it, and recomputes the chain from there, as an attacker without
// the key would: only the signatures are left stale.
func reaimSignedHeads(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	rows, err := db.Query("SELECT seq FROM decisions WHERE kind = ? ORDER BY seq", KindSignedHead)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var seq int64
		rows.Scan(&seq)
		seqs = append(seqs, seq)
	}
	rows.Close()
	db.Close()
	for _, seq := range seqs {
		db, _ := sql.Open("sqlite", path)
		var input, prev string
		if err := db.QueryRow("SELECT input, prev_hash FROM decisions WHERE seq = ?", seq).Scan(&input, &prev); err != nil {
			t.Fatal(err)
		}
		cp, err := ParseCheckpoint([]byte(input))
		if err != nil {
			t.Fatal(err)
		}
		cp.Hash = prev
		b, _ := cp.marshal()
		canon, _ := canonicalObject(b)
		if _, err := db.Exec("UPDATE decisions SET input = ? WHERE seq = ?", canon, seq); err != nil {
			t.Fatal(err)
		}
		db.Close()
		rechain(t, path, seq)
	}
}

// errAny marks a case that must fail without being a verification failure.
var errAny = errors.New("any error")

func TestCheckpointWrittenPeriodically(t *testing.T) {
	dir := t.TempDir()
	cp := filepath.Join(dir, "cp.json")
	l := startLog(t, Config{Path: filepath.Join(dir, "audit.db"), SignInterval: 10 * time.Millisecond, Checkpoint: CheckpointConfig{File: cp, Interval: 10 * time.Millisecond}})
	appendN(t, l.Log, 3, t0)
	deadline := time.Now().Add(60 * time.Second)
	for {
		// The signer may add its head row (seq 4) before the first
		// checkpoint: any checkpoint covering the three rows will do.
		c, err := ReadCheckpoint(cp)
		if err == nil && c.Seq >= 3 {
			if err := c.Verify(l.PublicKey()); err != nil {
				t.Fatal(err)
			}
			fi, _ := os.Stat(cp)
			if fi.Mode().Perm() != 0o644 {
				t.Errorf("checkpoint mode %v, want 0644", fi.Mode().Perm())
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint covering seq 3 after a minute (last: %v, %v)", c, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
