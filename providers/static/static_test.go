package static

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/credbroker/credbroker/providers"
	"github.com/credbroker/credbroker/providers/providertest"
)

var epoch = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return epoch }

func TestFileCredential(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte("first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Name: "demo", File: path, TTL: time.Hour, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		capTTL time.Duration
		want   time.Duration
	}{
		{"credential ttl when the policy sets none", 0, time.Hour},
		{"a shorter policy ttl wins", 15 * time.Minute, 15 * time.Minute},
		{"a longer policy ttl does not extend", 2 * time.Hour, time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := p.Credential(context.Background(), providers.Request{Name: "demo", TTL: tt.capTTL})
			if err != nil {
				t.Fatal(err)
			}
			if got := string(c.Data["value"].Reveal()); got != "first" {
				t.Errorf("value %q, want the file without its newline", got)
			}
			if c.ExpiresAt != epoch.Add(tt.want) || c.Kind != Kind || !strings.HasPrefix(c.ID, "static-") {
				t.Errorf("got %+v", c)
			}
		})
	}

	// Rotation: a new file is served from the next request on.
	next := path + ".new"
	if err := os.WriteFile(next, []byte("second"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, path); err != nil {
		t.Fatal(err)
	}
	c, err := p.Credential(context.Background(), providers.Request{})
	if err != nil || string(c.Data["value"].Reveal()) != "second" {
		t.Fatalf("after rotation: %q, %v", c.Data["value"].Reveal(), err)
	}

	// A vanished file is an error that names the file, never a stale value.
	os.Remove(path)
	_, err = p.Credential(context.Background(), providers.Request{})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "second") {
		t.Fatalf("after removal: %v", err)
	}
}

func TestEnvCredential(t *testing.T) {
	env := map[string]string{"DEMO_TOKEN": "from-env"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	p, err := New(Config{Name: "demo", Env: "DEMO_TOKEN", LookupEnv: lookup, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Credential(context.Background(), providers.Request{})
	if err != nil || string(c.Data["value"].Reveal()) != "from-env" || c.ExpiresAt != epoch.Add(DefaultTTL) {
		t.Fatalf("%+v %v", c, err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	none := func(string) (string, bool) { return "", false }
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"neither source", Config{Name: "x"}, "exactly one of file, env and fields"},
		{"both sources", Config{Name: "x", File: empty, Env: "X"}, "exactly one of file, env and fields"},
		{"negative ttl", Config{Name: "x", Env: "X", TTL: -time.Second}, "ttl must be positive"},
		{"missing file", Config{Name: "x", File: filepath.Join(dir, "nope")}, "no such file"},
		{"empty file", Config{Name: "x", File: empty}, "is empty"},
		{"unset variable", Config{Name: "x", Env: "NOPE", LookupEnv: none}, "NOPE is not set"},
		{"fields and file", Config{Name: "x", File: empty, FieldSources: map[string]*Source{"a": {Env: "A"}}}, "set fields, or one of file and env, not both"},
		{"no fields", Config{Name: "x", FieldSources: map[string]*Source{}}, "fields is empty"},
		{"bad field name", Config{Name: "x", FieldSources: map[string]*Source{"User-Name": {Env: "A"}}}, `field name "User-Name"`},
		{"field with both sources", Config{Name: "x", FieldSources: map[string]*Source{"password": {Env: "A", File: empty}}}, `field "password": exactly one of file and env`},
		{"field without a source", Config{Name: "x", FieldSources: map[string]*Source{"password": {}}}, `field "password": exactly one of file and env`},
		{"field variable unset", Config{Name: "x", FieldSources: map[string]*Source{"password": {Env: "NOPE"}}, LookupEnv: none}, "password: environment variable NOPE is not set"},
		{"field file empty", Config{Name: "x", FieldSources: map[string]*Source{"password": {File: empty}}}, "password: file " + empty + " is empty"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestCancelledContext(t *testing.T) {
	p, err := New(Config{Name: "x", Env: "X", LookupEnv: func(string) (string, bool) { return "v", true }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Credential(ctx, providers.Request{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v", err)
	}
}

// TestConformance runs the provider suite: a file-backed credential, and
// one whose file was removed after start.
func TestConformance(t *testing.T) {
	dir := t.TempDir()
	const canary = "CANARY-static-6d1f"
	good, gone := filepath.Join(dir, "good"), filepath.Join(dir, "gone")
	for _, f := range []string{good, gone} {
		if err := os.WriteFile(f, []byte(canary+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p, err := New(Config{Name: "conformance", File: good})
	if err != nil {
		t.Fatal(err)
	}
	failing, err := New(Config{Name: "conformance", File: gone})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	providertest.Run(t, providertest.Case{Kind: Kind, Fields: Fields, Provider: p, Failing: failing, Canary: canary})
}

// A credential of several fields, each from its own source: every field
// is served, a rotated field file is read again, and the suite passes.
func TestFields(t *testing.T) {
	dir := t.TempDir()
	const canary = "CANARY-static-fields-51c2"
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte(canary+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(k string) (string, bool) { return map[string]string{"DB_USER": "orders_app"}[k], k == "DB_USER" }
	cfg := Config{Name: "orders-db", FieldSources: map[string]*Source{"username": {Env: "DB_USER"}, "password": {File: pw}}, LookupEnv: env}
	if got := cfg.Fields(); !slices.Equal(got, []string{"password", "username"}) {
		t.Fatalf("Fields() = %q", got)
	}
	if got := cfg.Paths(); len(got) != 2 || *got[0] != pw || *got[1] != "" {
		t.Fatalf("Paths() = %v", got)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Credential(context.Background(), providers.Request{Name: "orders-db"})
	if err != nil || string(c.Data["username"].Reveal()) != "orders_app" || string(c.Data["password"].Reveal()) != canary || len(c.Data) != 2 {
		t.Fatalf("%v %v", c.Data, err)
	}
	if err := os.WriteFile(pw, []byte("rotated-and-longer"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err = p.Credential(context.Background(), providers.Request{Name: "orders-db"}); err != nil || string(c.Data["password"].Reveal()) != "rotated-and-longer" {
		t.Fatalf("after rotation: %v", err)
	}
	failing, err := New(Config{Name: "orders-db", FieldSources: map[string]*Source{"username": {Env: "DB_USER"}, "password": {File: pw}}, LookupEnv: env})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pw, []byte(canary), 0o600); err != nil {
		t.Fatal(err)
	}
	good, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	failing.fields["password"].file = filepath.Join(dir, "removed")
	providertest.Run(t, providertest.Case{Kind: Kind, Fields: cfg.Fields(), Provider: good, Failing: failing, Canary: canary, Public: []string{"username"}})
}
