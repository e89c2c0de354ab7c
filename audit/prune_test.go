package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPrune(t *testing.T) {
	tests := []struct {
		name      string
		before    time.Duration // after t0; rows are 1s apart
		batch     int
		wantPrune int64
		wantFirst int64
	}{
		{"some rows, one transaction", 40 * time.Second, 0, 40, 41},
		{"some rows, many transactions", 40 * time.Second, 7, 40, 41},
		{"nothing older", -time.Second, 0, 0, 1},
		{"every row", time.Hour, 9, 100, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.db")
			l := startLog(t, Config{Path: path})
			appendN(t, l.Log, 100, t0)
			pub := l.PublicKey()
			l.stop(t)

			n, err := Prune(context.Background(), path, t0.Add(tt.before), PruneOptions{BatchSize: tt.batch})
			if err != nil || n != tt.wantPrune {
				t.Fatalf("Prune = %d, %v; want %d", n, err, tt.wantPrune)
			}
			res, err := Verify(context.Background(), path, VerifyOptions{PublicKey: pub})
			if err != nil {
				t.Fatalf("Verify after prune: %v", err)
			}
			if res.FirstSeq != tt.wantFirst || res.HeadSeq != 100 || res.Rows != 100-tt.wantPrune {
				t.Errorf("Verify = first %d head %d rows %d; want first %d head 100 rows %d", res.FirstSeq, res.HeadSeq, res.Rows, tt.wantFirst, 100-tt.wantPrune)
			}

			// The chain goes on from where it was, pruned or not.
			l = startLog(t, Config{Path: path})
			more := appendN(t, l.Log, 3, t0.Add(2*time.Hour))
			l.stop(t)
			if more[0].Seq != 101 {
				t.Errorf("first row after prune has seq %d, want 101", more[0].Seq)
			}
			if _, err := Verify(context.Background(), path, VerifyOptions{PublicKey: pub}); err != nil {
				t.Errorf("Verify after appending: %v", err)
			}
		})
	}
}

func TestPruneKeepsRowsAfterANewerOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path})
	for i, at := range []time.Duration{0, 20, 1, 30} { // seq 3 is old but follows a new row
		if err := l.Append(context.Background(), testRecord(i, t0.Add(at*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	l.stop(t)
	n, err := Prune(context.Background(), path, t0.Add(15*time.Second), PruneOptions{})
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1 (seq 3 must stay, it follows seq 2)", n, err)
	}
	if _, err := Verify(context.Background(), path, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestPruneAnchorTampering(t *testing.T) {
	dir := t.TempDir()
	f := &fixture{path: filepath.Join(dir, "audit.db")}
	l := startLog(t, Config{Path: f.path})
	f.recs = appendN(t, l.Log, 20, t0)
	f.pub = l.PublicKey()
	l.stop(t)
	if _, err := Prune(context.Background(), f.path, t0.Add(5*time.Second), PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	_, otherKey, _ := ed25519.GenerateKey(nil)
	forge := func(t *testing.T, path string, a *Anchor, key ed25519.PrivateKey) {
		msg, err := a.message()
		if err != nil {
			t.Fatal(err)
		}
		a.Signature = ed25519.Sign(key, msg)
		b, _ := json.Marshal(a)
		sqlExec(t, path, "UPDATE meta SET value = '"+string(b)+"' WHERE key = 'prune_anchor'")
	}
	tests := []struct {
		name       string
		tamper     func(t *testing.T, path string)
		wantSeq    int64
		wantDetail string
	}{
		{"delete more old rows than the anchor allows", func(t *testing.T, p string) {
			sqlExec(t, p, "DELETE FROM decisions WHERE seq < 9")
		}, 9, "starts at seq 6"},
		{"forge the anchor to cover them", func(t *testing.T, p string) {
			sqlExec(t, p, "DELETE FROM decisions WHERE seq < 9")
			forge(t, p, &Anchor{Seq: 9, PrevHash: f.recs[7].Hash}, otherKey)
		}, 9, "signature"},
		{"edit the anchor's seq", func(t *testing.T, p string) {
			sqlExec(t, p, "DELETE FROM decisions WHERE seq < 9",
				`UPDATE meta SET value = replace(value, '"seq":6', '"seq":9') WHERE key = 'prune_anchor'`)
		}, 9, "signature"},
		{"remove the anchor", func(t *testing.T, p string) {
			sqlExec(t, p, "DELETE FROM meta WHERE key = 'prune_anchor'")
		}, 6, "never pruned"},
		{"garble the anchor", func(t *testing.T, p string) {
			sqlExec(t, p, "UPDATE meta SET value = '{' WHERE key = 'prune_anchor'")
		}, 0, "prune anchor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := f.copyDB(t)
			tt.tamper(t, path)
			_, err := Verify(context.Background(), path, VerifyOptions{PublicKey: f.pub})
			var fail *Failure
			if !errors.As(err, &fail) {
				t.Fatalf("Verify = %v, want a Failure", err)
			}
			if fail.Seq != tt.wantSeq || !strings.Contains(fail.Detail, tt.wantDetail) {
				t.Errorf("Failure = %v; want seq %d mentioning %q", fail, tt.wantSeq, tt.wantDetail)
			}
		})
	}
}

func TestPruneWhileWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path})
	appendN(t, l.Log, 200, t0)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 200 {
			if err := l.Append(context.Background(), testRecord(1000+i, t0.Add(time.Hour))); err != nil {
				t.Errorf("Append while pruning: %v", err)
				return
			}
		}
	}()
	n, err := Prune(context.Background(), path, t0.Add(150*time.Second), PruneOptions{BatchSize: 10})
	wg.Wait()
	if err != nil || n != 150 {
		t.Fatalf("Prune = %d, %v; want 150", n, err)
	}
	l.stop(t)
	res, err := Verify(context.Background(), path, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.FirstSeq != 151 || res.HeadSeq != 400 {
		t.Errorf("Verify = first %d head %d, want 151..400", res.FirstSeq, res.HeadSeq)
	}
}

func TestPruneNeedsKey(t *testing.T) {
	f := newFixture(t, 3)
	_, err := Prune(context.Background(), f.path, t0.Add(time.Hour), PruneOptions{KeyFile: filepath.Join(t.TempDir(), "missing.key")})
	if err == nil {
		t.Fatal("Prune without a key file succeeded")
	}
}
