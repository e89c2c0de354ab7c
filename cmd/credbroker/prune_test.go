package main

import (
	"bufio"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"
)

// verifyTimeLayout is how `audit verify` prints times.
const verifyTimeLayout = "2006-01-02T15:04:05.000Z07:00"

// withMinRetention rewrites e's configuration with audit.min_retention set.
func withMinRetention(t *testing.T, e *env, d string) {
	t.Helper()
	cfg := string(mustRead(t, e.config))
	if !strings.Contains(cfg, "audit: {path: ") {
		t.Fatalf("no audit section to extend in:\n%s", cfg)
	}
	e.write("credbroker.yaml", strings.Replace(cfg, "audit: {path: ", "audit: {min_retention: "+d+", path: ", 1))
}

// decisionTimes returns the time of each decision in the log at db, by id.
func decisionTimes(t *testing.T, db string) map[string]time.Time {
	t.Helper()
	out, errOut, code := credbroker(t, "audit", "query", "--db", db, "--format", "json")
	if code != 0 {
		t.Fatalf("audit query: exit %d: %s", code, errOut)
	}
	times := map[string]time.Time{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r struct {
			DecisionID string    `json:"decision_id"`
			Time       time.Time `json:"time"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit query line %q: %v", sc.Text(), err)
		}
		times[r.DecisionID] = r.Time
	}
	return times
}

// TestAuditPruneRetentionFloor runs a broker with audit.min_retention, and
// checks through the binary that `audit prune` honours the floor the broker
// stored in the database (without the configuration), that --force prunes
// below it on the record, and that `audit verify` reports what was removed.
func TestAuditPruneRetentionFloor(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t-value\n")
	withMinRetention(t, e, "36h")
	b := e.start()
	c := socketClient(e.socket)
	request := func() string {
		t.Helper()
		r := call(t, c, "GET", "/v1/credentials/demo", nil, nil)
		if r.Status != 200 {
			t.Fatalf("status %d: %s", r.Status, r.Body)
		}
		return r.OK.DecisionID
	}
	var old, recent []string
	for range 3 {
		old = append(old, request())
	}
	cut := time.Now() // after the old decisions were recorded, before the recent ones
	for range 2 {
		recent = append(recent, request())
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("broker exit %d:\n%s", code, b.logs)
	}
	times := decisionTimes(t, e.db)
	cutArg := cut.UTC().Format(time.RFC3339Nano)

	for _, before := range []string{"1m", cutArg, "35h"} {
		out, errOut, code := credbroker(t, "audit", "prune", "--db", e.db, "--before", before)
		if code != 1 || out != "" {
			t.Fatalf("audit prune --before %s: exit %d, stdout %q; want exit 1", before, code, out)
		}
		t.Logf("audit prune --before %s: %s", before, errOut)
		for _, want := range []string{"within the retention floor of 36h", "the audit.min_retention the broker stored", "--force"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("audit prune --before %s says %q, want it to mention %q", before, errOut, want)
			}
		}
	}
	if got := decisionTimes(t, e.db); len(got) != len(times) {
		t.Fatalf("a refused prune removed decisions: %d left of %d", len(got), len(times))
	}
	if _, errOut, code := credbroker(t, "audit", "prune", "--db", e.db, "--before", "1m", "--batch", "0"); code != exitUsage || !strings.Contains(errOut, "--batch") {
		t.Errorf("audit prune --batch 0: exit %d, %q; want a usage error", code, errOut)
	}

	// Forced, one row per transaction: the old decisions go, the recent stay.
	out, errOut, code := credbroker(t, "audit", "prune", "--db", e.db, "--before", cutArg, "--force", "--batch", "1")
	if code != 0 || !strings.HasPrefix(out, "pruned ") {
		t.Fatalf("audit prune --force --batch 1: exit %d: %s %s", code, out, errOut)
	}
	left := decisionTimes(t, e.db)
	for _, id := range old {
		if _, ok := left[id]; ok {
			t.Errorf("decision %s, older than the cut-off, was not pruned", id)
		}
	}
	for _, id := range recent {
		if _, ok := left[id]; !ok {
			t.Errorf("decision %s, newer than the cut-off, was pruned", id)
		}
	}

	out, errOut, code = credbroker(t, "audit", "verify", "--db", e.db)
	if code != 0 {
		t.Fatalf("audit verify after the prune: exit %d: %s %s", code, out, errOut)
	}
	t.Logf("audit verify: %s", out)
	for _, want := range []string{
		"; pruned: ",
		" with times from " + times[old[0]].UTC().Format(verifyTimeLayout) + " to ",
		"last cut-off " + cut.UTC().Format(verifyTimeLayout),
		"; forced below the retention floor",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("audit verify says\n%s\nwant it to contain %q", out, want)
		}
	}

	// The broker carries on after the prune, and the chain still verifies.
	b = e.start()
	request()
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("broker exit %d after the prune:\n%s", code, b.logs)
	}
	if out, errOut, code := credbroker(t, "audit", "verify", "--db", e.db); code != 0 || !strings.Contains(out, "forced below the retention floor") {
		t.Errorf("audit verify after restarting: exit %d: %s %s", code, out, errOut)
	}
}

// TestAuditPruneDefaultFloor checks the floor of a broker configured
// without audit.min_retention: a day.
func TestAuditPruneDefaultFloor(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t-value\n")
	b := e.start()
	if r := call(t, socketClient(e.socket), "GET", "/v1/credentials/demo", nil, nil); r.Status != 200 {
		t.Fatalf("status %d: %s", r.Status, r.Body)
	}
	b.stop(syscall.SIGTERM)
	_, errOut, code := credbroker(t, "audit", "prune", "--db", e.db, "--before", "1m")
	if code != 1 || !strings.Contains(errOut, "within the retention floor of 24h") {
		t.Errorf("audit prune --before 1m: exit %d, %q; want exit 1 naming the 24h floor", code, errOut)
	}
	if out, errOut, code := credbroker(t, "audit", "prune", "--db", e.db, "--before", "24h"); code != 0 || !strings.HasPrefix(out, "pruned 0 ") {
		t.Errorf("audit prune --before 24h: exit %d: %s %s", code, out, errOut)
	}
}
