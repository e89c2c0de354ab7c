package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	unixattest "github.com/credbroker/credbroker/attest/unix"
	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/policies"
	"github.com/credbroker/credbroker/providers"
)

// fieldsProvider serves one credential with fixed fields. It stands for a
// static database login — username and password — as the postgres and
// vault providers return one; the static package serves a single value.
type fieldsProvider map[string]string

func (p fieldsProvider) Credential(_ context.Context, req providers.Request) (providers.Credential, error) {
	data := make(map[string]providers.Secret, len(p))
	for k, v := range p {
		data[k] = providers.NewSecret([]byte(v))
	}
	lease := providers.Lease{ID: "static-orders-1", Credential: req.Name, Subject: req.Identity.Subject,
		Kind: "static", ExpiresAt: time.Now().Add(time.Hour)}
	return providers.Credential{Lease: lease, Data: data}, nil
}

// TestDecideRecordsDatabase: a database listener's decision is one row
// naming its channel, target host, the database the client asked for and
// the user the broker logs in upstream as (the credential's UserField,
// bounded like every request string), and the password is nowhere in it.
func TestDecideRecordsDatabase(t *testing.T) {
	const password = "pw-canary-5f1e9c2b7d3a" // must never reach the log
	long := strings.Repeat("u", 300)
	set, err := policies.Compile([]policies.File{{Name: "p.yaml", Data: []byte(`policies:
  - name: app-reads-orders
    effect: allow
    workloads: [{unix: {uid: self}}]
    credentials: ["orders-*"]
    when: 'request.channel == "postgres" && request.database == "orders"'
`)}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "audit.db")
	ctx, cancel := context.WithCancel(context.Background())
	log, err := audit.Open(ctx, audit.Config{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- log.Run(ctx) }()
	defer func() { cancel(); <-done; log.Close() }()
	peer, err := unixattest.New(unixattest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Config{
		Peer: peer,
		Credentials: map[string]broker.Provider{
			"orders-db":   fieldsProvider{"username": "orders_app", "password": password},
			"orders-long": fieldsProvider{"username": long, "password": password},
		},
		Kinds:    map[string]string{"orders-db": "static", "orders-long": "static"},
		Policies: set, Audit: log, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	conn := acceptHeld(t, &harness{peer: peer}, 1)[0]

	tests := []struct {
		name, credential, database, userField string
		wantDecision, wantUser                string
	}{
		{"allowed", "orders-db", "orders", "username", audit.DecisionAllow, "orders_app"},
		{"denied: nothing obtained, no upstream user", "orders-db", "inventory", "username", audit.DecisionDeny, ""},
		{"no user field", "orders-db", "orders", "", audit.DecisionAllow, ""},
		{"user field the credential lacks", "orders-db", "orders", "login", audit.DecisionAllow, ""},
		{"a long user is bounded", "orders-long", "orders", "username", audit.DecisionAllow, long[:256] + "…(300 bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &broker.Request{Credential: tt.credential, Channel: broker.ChannelPostgres, Host: "db.internal:5432",
				Database: tt.database, User: "app", UserField: tt.userField, Conn: conn}
			g, err := b.Decide(ctx, req)
			id := ""
			switch {
			case tt.wantDecision == audit.DecisionAllow && err != nil:
				t.Fatalf("Decide: %v", err)
			case tt.wantDecision == audit.DecisionAllow:
				id = g.DecisionID
			case err == nil:
				t.Fatalf("Decide allowed, want %s", tt.wantDecision)
			default:
				var e *broker.Error
				if !errors.As(err, &e) {
					t.Fatalf("Decide: %v, want a *broker.Error", err)
				}
				id = e.DecisionID
			}
			r := recordOf(t, db, id)
			if r.Decision != tt.wantDecision || r.Channel != broker.ChannelPostgres || r.TargetHost != "db.internal:5432" ||
				r.Database != tt.database || r.UpstreamUser != tt.wantUser {
				t.Errorf("row: decision %q channel %q host %q database %q upstream user %q; want %s postgres db.internal:5432 %q %q",
					r.Decision, r.Channel, r.TargetHost, r.Database, r.UpstreamUser, tt.wantDecision, tt.database, tt.wantUser)
			}
			if field, ok := holds(r, password); ok {
				t.Errorf("the password is in the row's %s", field)
			}
		})
	}
	res, err := audit.Verify(context.Background(), db, audit.VerifyOptions{})
	if err != nil || res.Decisions != int64(len(tests)) {
		t.Fatalf("verify: %v, %+v", err, res)
	}
	for _, suffix := range []string{"", "-wal"} {
		data, err := os.ReadFile(db + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), password) {
			t.Errorf("the password is in audit.db%s", suffix)
		}
	}
}

// recordOf reads the row of one decision.
func recordOf(t *testing.T, db, id string) *audit.Record {
	t.Helper()
	var got *audit.Record
	err := audit.Query(context.Background(), db, audit.Filter{}, func(r *audit.Record) error {
		if r.DecisionID == id {
			got = r
		}
		return nil
	})
	if err != nil || got == nil {
		t.Fatalf("the row of decision %s: %v", id, err)
	}
	return got
}

// holds reports the first field of r — every string field, the claims and
// the input — that contains s.
func holds(r *audit.Record, s string) (string, bool) {
	v := reflect.ValueOf(*r)
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.String && strings.Contains(f.String(), s) {
			return v.Type().Field(i).Name, true
		}
	}
	claims, _ := json.Marshal(r.Claims)
	switch {
	case strings.Contains(string(claims), s):
		return "Claims", true
	case strings.Contains(string(r.Input), s):
		return "Input", true
	}
	return "", false
}
