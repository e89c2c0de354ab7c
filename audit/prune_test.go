package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// pruneNow is a clock for Prune well past the test records (at t0 and
// after), so that the retention floor never gets in the way unless a test
// asks for it.
var pruneNow = t0.Add(30 * 24 * time.Hour)

// pruneOpts returns PruneOptions with the clock at pruneNow.
func pruneOpts(batch int) PruneOptions {
	return PruneOptions{BatchSize: batch, Now: func() time.Time { return pruneNow }}
}

// headSeq returns the seq of the newest row of the log at path, which
// verifies.
func headSeq(t *testing.T, path string) int64 {
	t.Helper()
	res, err := Verify(context.Background(), path, VerifyOptions{})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return res.HeadSeq
}

func TestPrune(t *testing.T) {
	tests := []struct {
		name      string
		before    time.Duration // after t0; rows are 1s apart
		batch     int
		force     bool
		wantPrune int64 // -1: every row
		wantFirst int64 // 0: none left
	}{
		{"some rows, one transaction", 40 * time.Second, 0, false, 40, 41},
		{"some rows, many transactions", 40 * time.Second, 7, false, 40, 41},
		{"some rows, one per transaction", 5 * time.Second, 1, false, 5, 6},
		{"nothing older", -time.Second, 0, false, 0, 1},
		{"every row, forced", 0, 9, true, -1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.db")
			l := startLog(t, Config{Path: path, SignInterval: -1})
			appendN(t, l.Log, 100, t0)
			pub := l.PublicKey()
			l.stop(t)
			head := headSeq(t, path)

			before, opts := t0.Add(tt.before), pruneOpts(tt.batch)
			if tt.force { // the rows the Log added itself are as new as the clock
				before, opts = time.Now().Add(time.Hour), PruneOptions{BatchSize: tt.batch, Force: true}
			}
			want := tt.wantPrune
			if want < 0 {
				want = head
			}
			n, err := Prune(context.Background(), path, before, opts)
			if err != nil || n != want {
				t.Fatalf("Prune = %d, %v; want %d", n, err, want)
			}
			res, err := Verify(context.Background(), path, VerifyOptions{PublicKey: pub})
			if err != nil {
				t.Fatalf("Verify after prune: %v", err)
			}
			if res.FirstSeq != tt.wantFirst || res.HeadSeq != head || res.Rows != head-n {
				t.Errorf("Verify = first %d head %d rows %d; want first %d head %d rows %d", res.FirstSeq, res.HeadSeq, res.Rows, tt.wantFirst, head, head-n)
			}
			if n > 0 && (res.Anchor == nil || res.Anchor.Seq != n+1 || res.Anchor.Rows != n || res.Anchor.Forced != tt.force) {
				t.Errorf("anchor %+v, want seq %d, %d rows, forced %v", res.Anchor, n+1, n, tt.force)
			}

			// The chain goes on from where it was, pruned or not.
			l = startLog(t, Config{Path: path, SignInterval: -1})
			more := appendN(t, l.Log, 3, t0.Add(2*time.Hour))
			l.stop(t)
			if more[0].Seq <= head {
				t.Errorf("first row after prune has seq %d, want more than %d", more[0].Seq, head)
			}
			if _, err := Verify(context.Background(), path, VerifyOptions{PublicKey: pub}); err != nil {
				t.Errorf("Verify after appending: %v", err)
			}
		})
	}
}

func TestPruneKeepsRowsAfterANewerOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path, SignInterval: -1})
	for i, at := range []time.Duration{0, 20, 1, 30} { // seq 3 is old but follows a new row
		if err := l.Append(context.Background(), testRecord(i, t0.Add(at*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	l.stop(t)
	n, err := Prune(context.Background(), path, t0.Add(15*time.Second), pruneOpts(0))
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1 (seq 3 must stay, it follows seq 2)", n, err)
	}
	if _, err := Verify(context.Background(), path, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestPruneRetentionFloor checks that Prune refuses a cut-off within the
// floor the broker stored (or the default), and that Force overrides it on
// the record.
func TestPruneRetentionFloor(t *testing.T) {
	// Rows at t0 … t0+99s; the clock is a day and 50s later, so the default
	// floor allows a cut-off up to t0+50s.
	now := t0.Add(DefaultMinRetention + 50*time.Second)
	tests := []struct {
		name       string
		stored     time.Duration // Config.MinRetention; 0 stores the default
		noMeta     bool          // remove the stored floor, as in a log of an older release
		before     time.Duration // after t0
		force      bool
		wantErr    []string // in the refusal
		wantFloor  time.Duration
		wantStored bool
		wantPrune  int64
	}{
		{name: "within the default floor", noMeta: true, before: 60 * time.Second,
			wantErr:   []string{"cut-off 2025-03-04T05:07:07.890Z", "retention floor of 24h", "the default", "latest cut-off allowed is 2025-03-04T05:06:57.890Z", "--force"},
			wantFloor: DefaultMinRetention},
		{name: "outside the default floor", noMeta: true, before: 40 * time.Second, wantPrune: 40},
		{name: "the floor exactly", noMeta: true, before: 50 * time.Second, wantPrune: 50},
		{name: "default stored by Open", before: 60 * time.Second,
			wantErr: []string{"retention floor of 24h", "the audit.min_retention the broker stored"}, wantFloor: DefaultMinRetention, wantStored: true},
		{name: "within a stored floor longer than the default", stored: 48 * time.Hour, before: -23 * time.Hour,
			wantErr: []string{"retention floor of 48h", "the audit.min_retention the broker stored", "--force"}, wantFloor: 48 * time.Hour, wantStored: true},
		{name: "outside a stored floor shorter than the default", stored: 90 * time.Minute, before: 80 * time.Second, wantPrune: 80},
		{name: "within a stored floor shorter than the default", stored: 90 * time.Minute, before: 24 * time.Hour,
			wantErr: []string{"retention floor of 1h30m"}, wantFloor: 90 * time.Minute, wantStored: true},
		{name: "forced", noMeta: true, before: 60 * time.Second, force: true, wantPrune: 60},
		{name: "forced but not needed", before: 40 * time.Second, force: true, wantPrune: 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.db")
			l := startLog(t, Config{Path: path, MinRetention: tt.stored, SignInterval: -1})
			appendN(t, l.Log, 100, t0)
			l.stop(t)
			if tt.noMeta {
				sqlExec(t, path, "DELETE FROM meta WHERE key = 'min_retention'")
			}
			before := t0.Add(tt.before)
			n, err := Prune(context.Background(), path, before, PruneOptions{Force: tt.force, Now: func() time.Time { return now }})
			if tt.wantErr != nil {
				var re *RetentionError
				if !errors.As(err, &re) || n != 0 {
					t.Fatalf("Prune = %d, %v; want a RetentionError", n, err)
				}
				if re.Floor != tt.wantFloor || re.Stored != tt.wantStored || !re.Before.Equal(before) || !re.Limit.Equal(now.Add(-tt.wantFloor)) {
					t.Errorf("RetentionError %+v, want floor %v stored %v", re, tt.wantFloor, tt.wantStored)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				if res, err := Verify(context.Background(), path, VerifyOptions{}); err != nil || res.Anchor != nil || res.FirstSeq != 1 {
					t.Errorf("after a refused prune: %v, %v; want the log untouched", res, err)
				}
				return
			}
			if err != nil || n != tt.wantPrune {
				t.Fatalf("Prune = %d, %v; want %d", n, err, tt.wantPrune)
			}
			res, err := Verify(context.Background(), path, VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantForced := tt.force && tt.wantErr == nil && tt.before > 50*time.Second
			if res.Anchor.Forced != wantForced || strings.Contains(res.String(), "forced below the retention floor") != wantForced {
				t.Errorf("forced %v, want %v: %s", res.Anchor.Forced, wantForced, res)
			}
		})
	}
}

func TestMinRetentionConfig(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(context.Background(), Config{Path: filepath.Join(dir, "a.db"), MinRetention: -time.Hour}); err == nil || !strings.Contains(err.Error(), "min retention") {
		t.Errorf("Open with a negative MinRetention: %v, want a config error", err)
	}

	path := filepath.Join(dir, "audit.db")
	for _, tt := range []struct {
		cfg  time.Duration
		want string
	}{{0, "24h"}, {36 * time.Hour, "36h"}, {90 * time.Second, "1m30s"}} {
		l := startLog(t, Config{Path: path, MinRetention: tt.cfg})
		l.stop(t)
		if got := metaValue(t, path, metaMinRetention); got != tt.want {
			t.Errorf("MinRetention %v: stored %q, want %q", tt.cfg, got, tt.want)
		}
	}

	// A garbled floor stops a prune, forced or not, until the broker
	// rewrites it.
	sqlExec(t, path, "UPDATE meta SET value = 'a week' WHERE key = 'min_retention'")
	for _, force := range []bool{false, true} {
		_, err := Prune(context.Background(), path, t0, PruneOptions{Force: force})
		if err == nil || !strings.Contains(err.Error(), `min_retention "a week"`) {
			t.Errorf("Prune (force %v) with a garbled floor: %v", force, err)
		}
	}
	l := startLog(t, Config{Path: path, SignInterval: -1})
	l.stop(t)
	if got := metaValue(t, path, metaMinRetention); got != "24h" {
		t.Errorf("after Open the floor is %q, want 24h", got)
	}
}

// metaValue reads one meta value of the database at path.
func metaValue(t *testing.T, path, key string) string {
	t.Helper()
	c, err := openConn(path, modeReadOnly, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	v, _, err := getMeta(c, key)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestPruneAnchorRecordsRange prunes in three steps and checks that the
// anchor accumulates what was removed and that Verify reports it.
func TestPruneAnchorRecordsRange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path, SignInterval: -1})
	recs := appendN(t, l.Log, 40, t0)
	old := testRecord(99, t0.Add(-time.Hour)) // seq 41: the oldest time, not the first row
	if err := l.Append(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	appendN(t, l.Log, 10, t0.Add(time.Minute))
	l.stop(t)

	floorAt := func(cut time.Duration) func() time.Time { // a clock whose floor is at t0+cut
		return func() time.Time { return t0.Add(cut + DefaultMinRetention) }
	}
	steps := []struct {
		before     time.Duration
		force      bool
		batch      int
		want       int64
		wantOldest time.Time
		wantNewest time.Time
		wantForced bool
	}{
		{10 * time.Second, false, 3, 10, t0, recs[9].Time, false},
		{30 * time.Second, true, 0, 20, t0, recs[29].Time, true},                                        // forced below the floor
		{65 * time.Second, false, 4, 16, t0.Add(-time.Hour), t0.Add(time.Minute + 4*time.Second), true}, // seq 31–46, with the old row
	}
	var rows int64
	for i, s := range steps {
		opts := PruneOptions{BatchSize: s.batch, Force: s.force, Now: floorAt(s.before)}
		if s.force {
			opts.Now = floorAt(s.before - time.Second)
		}
		n, err := Prune(context.Background(), path, t0.Add(s.before), opts)
		if err != nil || n != s.want {
			t.Fatalf("step %d: Prune = %d, %v; want %d", i, n, err, s.want)
		}
		rows += n
		res, err := Verify(context.Background(), path, VerifyOptions{})
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		a := res.Anchor
		wantAt := opts.Now()
		if a.Version != AnchorVersion || a.Seq != rows+1 || a.Rows != rows || !a.Oldest.Equal(s.wantOldest) || !a.Newest.Equal(s.wantNewest) ||
			!a.Before.Equal(t0.Add(s.before)) || !a.PrunedAt.Equal(wantAt) || a.Forced != s.wantForced {
			t.Errorf("step %d: anchor %+v; want seq %d, %d rows, %s to %s, before %s, at %s, forced %v",
				i, a, rows+1, rows, s.wantOldest, s.wantNewest, t0.Add(s.before), wantAt, s.wantForced)
		}
		if i == len(steps)-1 {
			want := "; pruned: 46 rows removed, seq 1 to 46 with times from 2025-03-04T04:06:07.890Z to 2025-03-04T05:07:11.890Z; " +
				"last cut-off 2025-03-04T05:07:12.890Z, pruned at 2025-03-05T05:07:12.890Z; forced below the retention floor; " +
				"the chain starts at the signed anchor at seq 47"
			if !strings.Contains(res.String(), want) {
				t.Errorf("Verify says\n%s\nwant it to contain\n%s", res, want)
			}
		}
	}
}

// TestPruneV1Fixture checks that a log pruned by the release before anchor
// version 2 still verifies, before and after migration, and that pruning it
// again records the range of what it removes from then on.
func TestPruneV1Fixture(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"audit.db", "audit.db.key"} {
		data, err := os.ReadFile(filepath.Join("testdata", "v1-pruned", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "audit.db")
	const v1 = "pruned: rows 1 to 3 removed, by a release that did not record their times; the chain starts at the signed anchor at seq 4"

	res, err := Verify(context.Background(), path, VerifyOptions{})
	if err != nil {
		t.Fatalf("Verify of the v1 fixture: %v", err)
	}
	if res.Anchor.Version != 0 || res.Anchor.Seq != 4 || !strings.Contains(res.String(), v1) {
		t.Errorf("Verify of the v1 fixture: %+v\n%s", res.Anchor, res)
	}

	l := startLog(t, Config{Path: path, SignInterval: -1})
	l.stop(t)
	res, err = Verify(context.Background(), path, VerifyOptions{})
	if err != nil || !strings.Contains(res.String(), v1) {
		t.Fatalf("Verify after migration: %v\n%v", err, res)
	}

	// Prune seq 4 and 5: a day after the fixture's rows, the floor allows it.
	c, err := openConn(path, modeReadOnly, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := c.queryRow("SELECT time FROM decisions WHERE seq = 6")
	c.close()
	if err != nil {
		t.Fatal(err)
	}
	sixth := time.Unix(0, v[0].(int64))
	now := func() time.Time { return sixth.Add(DefaultMinRetention) }
	n, err := Prune(context.Background(), path, sixth, PruneOptions{Now: now})
	if err != nil || n != 2 {
		t.Fatalf("Prune = %d, %v; want 2", n, err)
	}
	res, err = Verify(context.Background(), path, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if a := res.Anchor; a.Version != AnchorVersion || a.Seq != 6 || a.Rows != 2 || !a.Newest.Before(sixth) {
		t.Errorf("anchor after pruning the v1 fixture: %+v", a)
	}
	if want := "pruned: 5 rows removed (rows 1 to 3 by a release that did not record their times), seq 4 to 5 with times from"; !strings.Contains(res.String(), want) {
		t.Errorf("Verify says\n%s\nwant it to contain\n%s", res, want)
	}
}

func TestPruneAnchorTampering(t *testing.T) {
	dir := t.TempDir()
	f := &fixture{path: filepath.Join(dir, "audit.db")}
	l := startLog(t, Config{Path: f.path, SignInterval: -1})
	f.recs = appendN(t, l.Log, 20, t0)
	f.pub = l.PublicKey()
	l.stop(t)
	if _, err := Prune(context.Background(), f.path, t0.Add(5*time.Second), pruneOpts(0)); err != nil {
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
	edit := func(from, to string) func(t *testing.T, p string) {
		return func(t *testing.T, p string) {
			sqlExec(t, p, `UPDATE meta SET value = replace(value, '`+from+`', '`+to+`') WHERE key = 'prune_anchor'`)
			if metaValue(t, p, metaPruneAnchor) == metaValue(t, f.path, metaPruneAnchor) {
				t.Fatalf("the anchor has no %s", from)
			}
		}
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
			sqlExec(t, p, "DELETE FROM decisions WHERE seq < 9")
			edit(`"seq":6`, `"seq":9`)(t, p)
		}, 9, "signature"},
		{"edit the number of rows removed", edit(`"rows":5`, `"rows":4`), 6, "signature"},
		{"edit the oldest time removed", edit(`"oldest":"2025-03-04T05:06:07.890123456Z"`, `"oldest":"2025-03-04T05:06:08.890123456Z"`), 6, "signature"},
		{"edit the newest time removed", edit(`"newest":"2025-03-04T05:06:11.890123456Z"`, `"newest":"2025-03-04T05:06:10.890123456Z"`), 6, "signature"},
		{"edit the cut-off", edit(`"before":"2025-03-04T05:06:12.890123456Z"`, `"before":"2025-03-04T05:06:11.890123456Z"`), 6, "signature"},
		{"claim a forced prune", edit(`,"signature"`, `,"forced":true,"signature"`), 6, "signature"},
		{"drop the version", edit(`"version":2,`, ``), 0, "fields of version 2"},
		{"downgrade to a version 1 anchor", func(t *testing.T, p string) {
			a, err := parseAnchor(metaValue(t, p, metaPruneAnchor))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(&Anchor{Seq: a.Seq, PrevHash: a.PrevHash, Signature: a.Signature})
			sqlExec(t, p, "UPDATE meta SET value = '"+string(b)+"' WHERE key = 'prune_anchor'")
		}, 6, "signature"},
		{"a version this program does not know", edit(`"version":2,`, `"version":3,`), 0, "unknown version 3"},
		{"more rows than the seq allows", edit(`"rows":5`, `"rows":6`), 0, "rows 6, want 1 to seq−1 (5)"},
		{"an unknown field", edit(`,"signature"`, `,"note":"x","signature"`), 0, `unknown field "note"`},
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
			wantProblem := ProblemAnchor
			if tt.name == "remove the anchor" {
				wantProblem = ProblemLink
			}
			if fail.Seq != tt.wantSeq || fail.Problem != wantProblem || !strings.Contains(fail.Detail, tt.wantDetail) {
				t.Errorf("Failure = %v; want seq %d, %v, mentioning %q", fail, tt.wantSeq, wantProblem, tt.wantDetail)
			}
		})
	}
}

// TestPruneForcedTampering checks that a forced prune cannot be made to look
// unforced.
func TestPruneForcedTampering(t *testing.T) {
	f := newFixture(t, 20)
	if _, err := Prune(context.Background(), f.path, time.Now(), PruneOptions{Force: true, BatchSize: 4}); err != nil {
		t.Fatal(err)
	}
	path := f.copyDB(t)
	sqlExec(t, path, `UPDATE meta SET value = replace(value, ',"forced":true', '') WHERE key = 'prune_anchor'`)
	_, err := Verify(context.Background(), path, VerifyOptions{PublicKey: f.pub})
	var fail *Failure
	if !errors.As(err, &fail) || fail.Problem != ProblemAnchor || !strings.Contains(fail.Detail, "signature") {
		t.Errorf("Verify of an anchor no longer forced = %v, want a bad signature", err)
	}
}

// TestPruneRefusesAGap checks that Prune does not sign over rows missing
// beyond the anchor: that would hide their deletion.
func TestPruneRefusesAGap(t *testing.T) {
	f := newFixture(t, 20)
	if _, err := Prune(context.Background(), f.path, t0.Add(5*time.Second), pruneOpts(0)); err != nil {
		t.Fatal(err)
	}
	sqlExec(t, f.path, "DELETE FROM decisions WHERE seq < 9")
	_, err := Prune(context.Background(), f.path, t0.Add(15*time.Second), pruneOpts(0))
	if err == nil || !strings.Contains(err.Error(), "the log starts at seq 9, not 6") {
		t.Errorf("Prune over a gap: %v", err)
	}
}

func TestParseAnchor(t *testing.T) {
	h := zeroHashHex
	for _, tt := range []struct {
		name, json, wantErr string
	}{
		{"version 1", `{"seq":6,"prev_hash":"` + h + `","signature":"AAAA"}`, ""},
		{"version 2", `{"version":2,"seq":6,"prev_hash":"` + h + `","rows":5,"oldest":"2025-03-04T05:06:07Z","newest":"2025-03-04T05:06:07Z","before":"2025-03-04T05:06:08Z","pruned_at":"2026-01-01T00:00:00Z","forced":true,"signature":"AAAA"}`, ""},
		{"version 2 without the times", `{"version":2,"seq":6,"prev_hash":"` + h + `","rows":5,"signature":"AAAA"}`, "oldest 0001-01-01T00:00:00Z is missing"},
		{"version 2 with no rows", `{"version":2,"seq":6,"prev_hash":"` + h + `","oldest":"2025-03-04T05:06:07Z","newest":"2025-03-04T05:06:07Z","before":"2025-03-04T05:06:08Z","pruned_at":"2026-01-01T00:00:00Z","signature":"AAAA"}`, "rows 0"},
		{"newest before oldest", `{"version":2,"seq":6,"prev_hash":"` + h + `","rows":5,"oldest":"2025-03-04T05:06:08Z","newest":"2025-03-04T05:06:07Z","before":"2025-03-04T05:06:08Z","pruned_at":"2026-01-01T00:00:00Z","signature":"AAAA"}`, "newest is before oldest"},
		{"version 1 with a version 2 field", `{"seq":6,"prev_hash":"` + h + `","forced":true,"signature":"AAAA"}`, "fields of version 2"},
		{"an explicit version 1", `{"version":1,"seq":6,"prev_hash":"` + h + `","signature":"AAAA"}`, "unknown version 1"},
		{"seq 0", `{"seq":0,"prev_hash":"` + h + `","signature":"AAAA"}`, "seq 0"},
		{"data after the object", `{"seq":6,"prev_hash":"` + h + `","signature":"AAAA"} {}`, "data after"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseAnchor(tt.json)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("parseAnchor = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestPruneWhileWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path, SignInterval: -1})
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
	n, err := Prune(context.Background(), path, t0.Add(150*time.Second), pruneOpts(10))
	wg.Wait()
	if err != nil || n != 150 {
		t.Fatalf("Prune = %d, %v; want 150", n, err)
	}
	l.stop(t)
	res, err := Verify(context.Background(), path, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.FirstSeq != 151 || res.HeadSeq < 400 {
		t.Errorf("Verify = first %d head %d, want 151 to 400 or more", res.FirstSeq, res.HeadSeq)
	}
}

func TestPruneNeedsKey(t *testing.T) {
	f := newFixture(t, 3)
	_, err := Prune(context.Background(), f.path, t0.Add(time.Hour), PruneOptions{KeyFile: filepath.Join(t.TempDir(), "missing.key")})
	if err == nil {
		t.Fatal("Prune without a key file succeeded")
	}
}

func TestPruneStopsWithContext(t *testing.T) {
	f := newFixture(t, 20)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n, err := Prune(ctx, f.path, t0.Add(time.Hour), pruneOpts(1))
	if !errors.Is(err, context.Canceled) || n != 0 {
		t.Errorf("Prune with a cancelled context = %d, %v", n, err)
	}
}

func TestYieldLetsAWaitingWriterIn(t *testing.T) {
	// SQLite's busy schedule: a writer that has waited w sleeps until the
	// next of these totals (ms). The gap after any batch must reach one.
	totals := []int{0, 1, 3, 8, 18, 33, 53, 78, 103, 128, 178, 228}
	for ms := 328; ms < 5000; ms += 100 {
		totals = append(totals, ms)
	}
	for hold := time.Duration(0); hold < 3*time.Second; hold += 500 * time.Microsecond {
		next := 0
		for _, ms := range totals {
			if time.Duration(ms)*time.Millisecond >= hold {
				next = ms
				break
			}
		}
		if wait := time.Duration(next)*time.Millisecond - hold; wait > yieldFor(hold) {
			t.Errorf("after a %v batch a writer that waited through it retries %v later, after the %v gap", hold, wait, yieldFor(hold))
			break
		}
	}
}
