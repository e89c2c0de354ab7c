package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/audit/replay"
	"github.com/credbroker/credbroker/policies"
)

// setA is the policy set the test log is decided under. setB removes the
// allow of uid 1000 and of uid 2000 to db, allows payments' api to read
// api, and keeps the rest; nightOnly allows db only before noon.
const (
	setA = `policies:
  - name: uid-1000-db
    effect: allow
    workloads: [{unix: {uid: 1000}}]
    credentials: [db]
  - name: uid-2000-db
    effect: allow
    workloads: [{unix: {uid: 2000}}]
    credentials: [db]
  - name: payments-db
    effect: allow
    workloads: [{kubernetes: {namespace: payments}}]
    credentials: [db]
    when: 'identity.peer.claims.uid == 1000'
  - name: nobody-reads-secret
    effect: deny
    workloads: [{unix: {uid: 1000}}]
    credentials: [secret]
`
	setB = `policies:
  - name: payments-db
    effect: allow
    workloads: [{kubernetes: {namespace: payments}}]
    credentials: [db]
    when: 'identity.peer.claims.uid == 1000'
  - name: payments-api
    effect: allow
    workloads: [{kubernetes: {namespace: payments}}]
    credentials: [api]
  - name: nobody-reads-secret
    effect: deny
    workloads: [{unix: {uid: 1000}}]
    credentials: [secret]
`
	mornings = `policies:
  - name: uid-1000-db-mornings
    effect: allow
    workloads: [{unix: {uid: 1000}}]
    credentials: [db]
    when: 'now.getHours() < 12'
`
)

var t0 = time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)

func compile(t *testing.T, doc string) *policies.Set {
	t.Helper()
	s, err := policies.Compile([]policies.File{{Name: "p.yaml", Data: []byte(doc)}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func unixID(uid int64) attest.Identity {
	return attest.Identity{Method: attest.MethodUnix, Subject: fmt.Sprintf("unix:uid:%d", uid), Claims: map[string]any{
		"uid": uid, "gid": uid, "pid": int64(4242), "exe": "/usr/bin/app", "exe_sha256": "9f2c",
	}}
}

func paymentsID(peerUID int64) attest.Identity {
	peer := unixID(peerUID)
	return attest.Identity{Method: attest.MethodKubernetes, Subject: "system:serviceaccount:payments:api", Claims: map[string]any{
		"namespace": "payments", "service_account": "api", "audience": []any{"credbroker"},
	}, Peer: &peer}
}

// decided records in as the broker does: the input stored, the decision of
// set, its policy and reason.
func decided(t *testing.T, set *policies.Set, id string, in policies.Input) *audit.Record {
	t.Helper()
	rec := blank(id, in)
	var err error
	if rec.Input, err = policies.EncodeInput(in); err != nil {
		t.Fatal(err)
	}
	d := set.Evaluate(in)
	rec.Decision, rec.Policy, rec.PolicyVersion, rec.Reason = audit.DecisionDeny, d.Policy, d.Version, d.Reason
	if d.Allowed() {
		rec.Decision = audit.DecisionAllow
	}
	return rec
}

func blank(id string, in policies.Input) *audit.Record {
	return &audit.Record{Time: in.Now, DecisionID: id, Attestor: in.Identity.Method, Subject: in.Identity.Subject,
		Credential: in.Request.Credential, Channel: in.Request.Channel, PeerUID: -1}
}

func input(id attest.Identity, cred string, at time.Time) policies.Input {
	return policies.Input{Identity: id, Request: policies.Request{Channel: "socket", Credential: cred, Method: "GET", Path: "/v1/credentials/" + cred}, Now: at}
}

// writeLog appends recs to a new log, stops it (which signs its head, a
// row of another kind) and returns its path.
func writeLog(t *testing.T, recs []*audit.Record) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.db")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, err := audit.Open(ctx, audit.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	for _, r := range recs {
		if err := l.Append(ctx, r); err != nil {
			t.Fatalf("append %s: %v", r.DecisionID, err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// history is a log decided under setA: allows, denies, a provider failure
// after an allow, refusals before any policy, a failed attestation and an
// input the broker could not encode, one a minute from t0, plus a decision
// an hour before t0, outside the replayed window.
func history(t *testing.T) (path string, rows map[string]*audit.Record) {
	t.Helper()
	a := compile(t, setA)
	var recs []*audit.Record
	rows = map[string]*audit.Record{}
	at := t0
	add := func(name string, r *audit.Record) {
		recs = append(recs, r)
		rows[name] = r
	}
	next := func() time.Time { at = at.Add(time.Minute); return at }
	id := func(name string) string { return fmt.Sprintf("%016x%s", at.UnixMilli(), name) }

	add("before the window", decided(t, a, "early", input(unixID(1000), "db", t0.Add(-time.Hour))))
	for i := range 4 {
		n := fmt.Sprintf("uid 1000 db %d", i)
		add(n, decided(t, a, id(fmt.Sprint("u", i)), input(unixID(1000), "db", next())))
	}
	add("uid 2000 db", decided(t, a, id("u2000"), input(unixID(2000), "db", next())))
	add("payments db", decided(t, a, id("pdb"), input(paymentsID(1000), "db", next())))
	add("payments db from uid 2000", decided(t, a, id("pdb2"), input(paymentsID(2000), "db", next())))
	add("payments api 1", decided(t, a, id("papi1"), input(paymentsID(1000), "api", next())))
	add("payments api 2", decided(t, a, id("papi2"), input(paymentsID(2000), "api", next())))
	add("uid 1000 secret", decided(t, a, id("sec"), input(unixID(1000), "secret", next())))
	// The provider failed after uid-1000-db allowed: an error row that
	// records its policy.
	gone := decided(t, a, id("gone"), input(unixID(1000), "db", next()))
	gone.Decision, gone.Reason = audit.DecisionError, `credential "db" is unavailable: its provider failed`
	add("uid 1000 db provider failed", gone)
	// An unknown credential: refused before any policy, with an input.
	nope := blank(id("nope"), input(unixID(1000), "nope", next()))
	nope.Decision, nope.Reason = audit.DecisionError, `no credential named "nope" is configured`
	nope.Input, _ = policies.EncodeInput(input(unixID(1000), "nope", at))
	add("unknown credential", nope)
	// A failed attestation: no identity, no input.
	failed := &audit.Record{Time: next(), DecisionID: id("fail"), Decision: audit.DecisionError, Reason: "kubernetes: token expired", Credential: "db", Channel: "socket", PeerUID: 0}
	add("attestation failed", failed)
	// The broker's stand-in for an input it could not encode.
	bad := decided(t, a, id("bad"), input(unixID(1000), "db", next()))
	bad.Input = json.RawMessage(`{"error":"policy input not encodable"}`)
	add("unencodable", bad)
	for _, r := range recs {
		want := map[string]string{"uid-1000-db": audit.DecisionAllow, "uid-2000-db": audit.DecisionAllow, "payments-db": audit.DecisionAllow,
			"nobody-reads-secret": audit.DecisionDeny, "": audit.DecisionDeny}[r.Policy]
		if r.Decision != want && r.Decision != audit.DecisionError {
			t.Fatalf("setA decided %s otherwise than the test expects: %+v", r.DecisionID, r)
		}
	}
	return writeLog(t, recs), rows
}

// TestReplayUnderItsOwnPolicies: the log replayed under the policies that
// decided it shows no change, and every row is accounted for.
func TestReplayUnderItsOwnPolicies(t *testing.T) {
	path, _ := history(t)
	rep, err := replay.Run(context.Background(), audit.OpenFile(path), compile(t, setA), audit.Filter{Since: t0})
	if err != nil {
		t.Fatal(err)
	}
	want := &replay.Report{PolicySetVersion: compile(t, setA).Version(), Since: t0, Decisions: 14, Compared: 11, ComparedErrors: 1, Unchanged: 11,
		NoInput: 1, NotEvaluated: 1, Undecodable: 1, Changes: []replay.Group{}}
	if !reflect.DeepEqual(rep, want) {
		t.Errorf("report\n%+v\nwant\n%+v", rep, want)
	}
}

// TestReplayGroups: under a set that removes two allows and adds one,
// exactly the affected decisions are reported, grouped by credential,
// workload and deciding policy (the recorded one for allow→deny, the
// proposed one for deny→allow), largest group first, with the oldest ids
// as examples; the provider failure after an allow counts as an allow;
// what was outside the window, or not comparable, is not.
func TestReplayGroups(t *testing.T) {
	path, rows := history(t)
	// Every kind is asked for: Run reads decisions only (the log's signed
	// head has an input of its own).
	rep, err := replay.Run(context.Background(), audit.OpenFile(path), compile(t, setB), audit.Filter{Since: t0, Kind: audit.KindAll})
	if err != nil {
		t.Fatal(err)
	}
	id := func(name string) string { return rows[name].DecisionID }
	at := func(name string) time.Time { return rows[name].Time }
	want := []replay.Group{
		{Change: replay.AllowToDeny, Credential: "db", Subject: "unix:uid:1000", Policy: "uid-1000-db", Count: 5,
			Examples: []string{id("uid 1000 db 0"), id("uid 1000 db 1"), id("uid 1000 db 2")},
			Reason:   "no policy allows unix:uid:1000 to read db", First: at("uid 1000 db 0"), Last: at("uid 1000 db provider failed")},
		// uid-2000-db allowed payments' token too, through its unix peer.
		{Change: replay.AllowToDeny, Credential: "db", Subject: "system:serviceaccount:payments:api", Policy: "uid-2000-db", Count: 1,
			Examples: []string{id("payments db from uid 2000")}, Reason: "no policy allows system:serviceaccount:payments:api to read db",
			First: at("payments db from uid 2000"), Last: at("payments db from uid 2000")},
		{Change: replay.AllowToDeny, Credential: "db", Subject: "unix:uid:2000", Policy: "uid-2000-db", Count: 1,
			Examples: []string{id("uid 2000 db")}, Reason: "no policy allows unix:uid:2000 to read db", First: at("uid 2000 db"), Last: at("uid 2000 db")},
		{Change: replay.DenyToAllow, Credential: "api", Subject: "system:serviceaccount:payments:api", Policy: "payments-api", Count: 2,
			Examples: []string{id("payments api 1"), id("payments api 2")}, Reason: "allowed by policy payments-api", First: at("payments api 1"), Last: at("payments api 2")},
	}
	if !reflect.DeepEqual(rep.Changes, want) {
		t.Errorf("changes\n%s\nwant\n%s", jsonOf(rep.Changes), jsonOf(want))
	}
	if rep.Decisions != 14 || rep.Compared != 11 || rep.ComparedErrors != 1 || rep.Unchanged != 2 || rep.AllowToDeny != 7 || rep.DenyToAllow != 2 ||
		rep.NoInput != 1 || rep.NotEvaluated != 1 || rep.Undecodable != 1 {
		t.Errorf("counts %+v", *rep)
	}
	if rep.Compared != rep.Unchanged+rep.AllowToDeny+rep.DenyToAllow || rep.Decisions != rep.Compared+rep.NoInput+rep.NotEvaluated+rep.Undecodable {
		t.Errorf("counts do not add up: %+v", *rep)
	}

	// The window's other end: only the first three minutes.
	rep, err = replay.Run(context.Background(), audit.OpenFile(path), compile(t, setB), audit.Filter{Since: t0, Until: t0.Add(3*time.Minute + time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Decisions != 3 || len(rep.Changes) != 1 || rep.Changes[0].Count != 3 || rep.Until != t0.Add(3*time.Minute+time.Second) {
		t.Errorf("window [t0, t0+3m]: %s", jsonOf(rep))
	}
}

// TestReplayAtRecordedTime: conditions see the decision's recorded time as
// now, not the time of the replay.
func TestReplayAtRecordedTime(t *testing.T) {
	a := compile(t, setA)
	morning := decided(t, a, "morning", input(unixID(1000), "db", time.Date(2026, 11, 30, 11, 59, 0, 0, time.UTC)))
	afternoon := decided(t, a, "afternoon", input(unixID(1000), "db", time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)))
	path := writeLog(t, []*audit.Record{morning, afternoon})
	rep, err := replay.Run(context.Background(), audit.OpenFile(path), compile(t, mornings), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Unchanged != 1 || rep.AllowToDeny != 1 || len(rep.Changes) != 1 || !reflect.DeepEqual(rep.Changes[0].Examples, []string{"afternoon"}) {
		t.Errorf("report %s, want the afternoon's allow denied and the morning's kept", jsonOf(rep))
	}
}

// TestReplayStops: a cancelled context or a store that cannot be read ends
// the replay with an error, never a partial report.
func TestReplayStops(t *testing.T) {
	path, _ := history(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if rep, err := replay.Run(ctx, audit.OpenFile(path), compile(t, setB), audit.Filter{}); !errors.Is(err, context.Canceled) || rep != nil {
		t.Errorf("cancelled: %v, %v", rep, err)
	}
	missing := filepath.Join(t.TempDir(), "none.db")
	if rep, err := replay.Run(context.Background(), audit.OpenFile(missing), compile(t, setB), audit.Filter{}); err == nil || rep != nil || !strings.HasPrefix(err.Error(), "replay: ") {
		t.Errorf("missing log: %v, %v", rep, err)
	}
	if _, err := replay.Run(context.Background(), audit.OpenFile(path), nil, audit.Filter{}); err == nil {
		t.Error("a nil set was accepted")
	}
}

// TestStoredFixturesReadAsWritten: the inputs of the logs earlier releases
// wrote (audit/testdata, every schema) decode, and encode back to exactly
// the bytes stored, so the codec reads every existing log and writes what
// the broker always wrote.
func TestStoredFixturesReadAsWritten(t *testing.T) {
	dirs, err := filepath.Glob("../testdata/v*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			// A copy: opening a log, even read-only, leaves WAL files beside it.
			path := filepath.Join(t.TempDir(), "audit.db")
			copyFile(t, filepath.Join(dir, "audit.db"), path)
			n := 0
			err := audit.Query(context.Background(), path, audit.Filter{Kind: audit.KindDecision}, func(r *audit.Record) error {
				if len(r.Input) == 0 {
					return nil
				}
				in, err := policies.DecodeInput(r.Input)
				if err != nil {
					return fmt.Errorf("decision %s: %w", r.DecisionID, err)
				}
				b, err := policies.EncodeInput(in)
				if err != nil {
					return err
				}
				if !bytes.Equal(b, r.Input) {
					return fmt.Errorf("decision %s: stored\n%s\nre-encoded\n%s", r.DecisionID, r.Input, b)
				}
				if in.Identity.Subject != r.Subject || in.Request.Credential != r.Credential || !in.Now.Equal(r.Time) {
					return fmt.Errorf("decision %s: input %+v disagrees with its row", r.DecisionID, in)
				}
				n++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				t.Fatal("no stored input in the fixture")
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

func jsonOf(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}
