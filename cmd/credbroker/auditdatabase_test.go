package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credbroker/credbroker/audit"
)

// copyAuditFixture copies the audit package's fixture name (a database
// written by an earlier release, its key, head and checkpoint files) to a
// new directory and returns the database path there.
func copyAuditFixture(t *testing.T, name string) string {
	t.Helper()
	src := filepath.Join("..", "..", "audit", "testdata", name)
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dst, "audit.db")
}

// TestAuditQueryDatabase checks through the binary that `audit query
// --database` finds a database listener's decision in a log written by the
// previous release (schema 3) after the broker's log migrated it, that the
// table, JSON and CSV outputs and `audit export` show its database and
// upstream user, and that the unmigrated log is read as it is.
func TestAuditQueryDatabase(t *testing.T) {
	old := copyAuditFixture(t, "v3")
	out, errOut, code := credbroker(t, "audit", "query", "--db", old, "--database", "orders", "--format", "json")
	if code != 0 || out != "" {
		t.Fatalf("query of the schema 3 log: exit %d, %q, %s", code, out, errOut)
	}

	db := copyAuditFixture(t, "v3")
	ctx, cancel := context.WithCancel(context.Background())
	l, err := audit.Open(ctx, audit.Config{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	rec := &audit.Record{
		Time: time.Now(), DecisionID: "0db0000000000000000000000000000a", Decision: audit.DecisionAllow,
		Reason: "allowed by policy app-reads-orders", Policy: "app-reads-orders", Attestor: "unix",
		Subject: "unix:uid:1000", PeerUID: 1000, Credential: "orders-db", Provider: "postgres",
		Channel: "postgres", TargetHost: "db.internal:5432", Database: "orders", UpstreamUser: "orders_app",
	}
	if err := l.Append(ctx, rec); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	query := func(format string) string {
		t.Helper()
		out, errOut, code := credbroker(t, "audit", "query", "--db", db, "--database", "orders", "--format", format)
		if code != 0 {
			t.Fatalf("audit query --database orders --format %s: exit %d: %s", format, code, errOut)
		}
		return out
	}
	var got struct {
		DecisionID   string `json:"decision_id"`
		Channel      string `json:"channel"`
		TargetHost   string `json:"target_host"`
		Database     string `json:"database"`
		UpstreamUser string `json:"upstream_user"`
	}
	lines := strings.Split(strings.TrimSpace(query("json")), "\n")
	if len(lines) != 1 {
		t.Fatalf("JSON: %d rows of database orders, want 1:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatal(err)
	}
	if got.DecisionID != rec.DecisionID || got.Channel != "postgres" || got.TargetHost != "db.internal:5432" ||
		got.Database != "orders" || got.UpstreamUser != "orders_app" {
		t.Errorf("JSON row: %+v", got)
	}

	rows, err := csv.NewReader(strings.NewReader(query("csv"))).ReadAll()
	if err != nil || len(rows) != 2 {
		t.Fatalf("CSV: %v, %q", err, rows)
	}
	header, row := rows[0], rows[1]
	// database and upstream_user came after kind (26), before the columns of
	// later releases.
	if len(header) < 28 || header[26] != "database" || header[27] != "upstream_user" || header[15] != "target_host" {
		t.Errorf("CSV header: %q", header)
	} else if row[26] != "orders" || row[27] != "orders_app" || row[14] != "postgres" || row[15] != "db.internal:5432" {
		t.Errorf("CSV row: %q", row)
	}

	table := strings.Split(strings.TrimSpace(query("table")), "\n")
	if len(table) != 2 {
		t.Fatalf("table:\n%s", strings.Join(table, "\n"))
	}
	head, cells := strings.Fields(table[0]), strings.Fields(table[1])
	for i, h := range head {
		want := map[string]string{"DATABASE": "orders", "UPSTREAM_USER": "orders_app", "CREDENTIAL": "orders-db"}[h]
		if want != "" && (i >= len(cells) || cells[i] != want) {
			t.Errorf("table column %s is not %q:\n%s", h, want, strings.Join(table, "\n"))
		}
	}

	out, errOut, code = credbroker(t, "audit", "export", "--db", db)
	if code != 0 {
		t.Fatalf("audit export: exit %d: %s", code, errOut)
	}
	exported := strings.Split(strings.TrimSpace(out), "\n")
	var withDB []string
	for _, line := range exported {
		if strings.Contains(line, `"database"`) || strings.Contains(line, `"upstream_user"`) {
			withDB = append(withDB, line)
		}
	}
	if len(withDB) != 1 || !strings.Contains(withDB[0], `"database":"orders"`) || !strings.Contains(withDB[0], `"upstream_user":"orders_app"`) {
		t.Errorf("export: rows naming a database: %q", withDB)
	}

	out, errOut, code = credbroker(t, "audit", "verify", "--db", db, "--checkpoint", filepath.Join(filepath.Dir(db), "checkpoint.json"))
	if code != 0 || !strings.HasPrefix(out, "ok: ") {
		t.Errorf("audit verify of the migrated log: exit %d: %s%s", code, out, errOut)
	}
}
