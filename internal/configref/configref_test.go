package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestReferenceUpToDate fails when docs/config-reference.md is not what
// the generator writes from the code as it is.
func TestReferenceUpToDate(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	want, err := Generate(root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, output))
	if err != nil {
		t.Fatalf("%v: generate it with `make docs` (go run ./internal/configref)", err)
	}
	if string(got) != string(want) {
		t.Fatalf("%s is out of date: regenerate it with `make docs` (go run ./internal/configref) and commit it\n%s", output, firstDifference(string(got), string(want)))
	}
}

// firstDifference shows the first line where the committed file and the
// generated one differ.
func firstDifference(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return "line " + strconv.Itoa(i+1) + ":\n  committed: " + gl + "\n  generated: " + wl
		}
	}
	return ""
}

// TestReferenceCoversTheConfiguration checks the generated reference
// against what the generator must have found in the code: every top-level
// key of Config, each provider and listener of cmd/credbroker's tables, and
// the keys of their packages' Config types, each row with a type and a
// description.
func TestReferenceCoversTheConfiguration(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate(root)
	if err != nil {
		t.Fatal(err)
	}
	ref := string(b)
	for _, key := range []string{
		"socket", "socket_mode", "socket_group", "max_connections", "admin", "drain_timeout", "audit", "policies",
		"attestors", "credentials", "leases", "listeners", "log",
		"audit.checkpoint.interval", "attestors.kubernetes.token_review", "attestors.unix.max_exe_bytes",
		"credentials[].name", "credentials[].ttl", "credentials[].static.fields.NAME.env",
		"credentials[].postgres.admin_dsn_file", "credentials[].vault.auth.jwt.pass_caller_token",
		"credentials[].aws_sts.role_arn", "credentials[].oauth2.token_url",
		"listeners[].http.header.value", "listeners[].http.sigv4.service", "listeners[].postgres.tls.mode",
		"listeners[].mysql.listener_tls.cert_file", "listeners[].redis.password_field",
		"listeners[].aws_credentials.listen", "listeners[].socket_api.listen",
	} {
		if !strings.Contains(ref, "| `"+key+"` |") {
			t.Errorf("no row for %s", key)
		}
	}
	// Every row has a type and a description; go-only names are gone.
	rowRE := regexp.MustCompile("(?m)^\\| `([^`]+)` \\| ([^|]+) \\| ([^|]*) \\| (.+) \\|$")
	rows := rowRE.FindAllStringSubmatch(ref, -1)
	if len(rows) < 100 {
		t.Fatalf("only %d rows", len(rows))
	}
	for _, r := range rows {
		if strings.TrimSpace(r[2]) == "" || strings.TrimSpace(r[4]) == "" {
			t.Errorf("row %s: empty type or description", r[1])
		}
		for _, goName := range []string{"DefaultDrainTimeout", "DefaultTTL", "listenerKinds", "providerKinds"} {
			if strings.Contains(r[4], goName) {
				t.Errorf("row %s: the Go name %s was not rewritten: %s", r[1], goName, r[4])
			}
		}
	}
	// Defaults read from the comments, with constants resolved.
	for key, def := range map[string]string{
		"socket":                             "`/run/credbroker/broker.sock`",
		"drain_timeout":                      "`30s`",
		"listeners[].http.drain_timeout":     "`10s`",
		"listeners[].http.header.value":      "`Bearer {{.token}}`",
		"credentials[].vault.kv.mount":       "`secret`",
		"attestors.kubernetes.audiences":     "required",
		"listeners[].http.allow_ambient":     "`false`",
		"credentials[].vault.namespace":      "none (the root namespace)",
		"credentials[].oauth2.client_id":     "required",
		"attestors.github.issuer":            "`https://token.actions.githubusercontent.com`",
		"credentials[].postgres.role_prefix": "`credbroker_`",
	} {
		found := false
		for _, r := range rows {
			if r[1] == key {
				found = true
				if got := strings.TrimSpace(r[3]); got != def {
					t.Errorf("%s: default %q, want %q", key, got, def)
				}
			}
		}
		if !found {
			t.Errorf("no row for %s", key)
		}
	}
}

func TestDefaultOf(t *testing.T) {
	for _, c := range []struct{ desc, want string }{
		{"`socket` is the socket API's path; default /run/credbroker/broker.sock.", "`/run/credbroker/broker.sock`"},
		{"`level` is debug, info, warn or error; default info.", "`info`"},
		{"Default none: the socket keeps the broker's group.", "none"},
		{"Default false: such callers are refused.", "`false`"},
		{"`ca_file` holds certificates. Default: the system roots.", "the system roots"},
		{"`cert_file` and `key_file` hold the key; default (both empty) the SVID.", "(both empty) the SVID"},
		{"`issuer` defaults to https://x.example; override for GHES.", "`https://x.example`"},
		{"`tls`, when present, connects with TLS; its mode defaults to verify-full. Default absent: no TLS.", "absent"},
		{"`role` is the Vault role to log in as. Required.", "required"},
		{"`file` holds the value. No default.", ""},
		{"the broker's credentials from the default AWS chain", ""},
		{"`namespace` of every request; default none (the root namespace).", "none (the root namespace)"},
	} {
		if got := defaultOf(c.desc); got != c.want {
			t.Errorf("defaultOf(%q) = %q, want %q", c.desc, got, c.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Hour: "1h", 10 * time.Minute: "10m", 90 * time.Second: "1m30s", 500 * time.Millisecond: "500ms", 24 * time.Hour: "24h", 10 * time.Second: "10s",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestRewrite(t *testing.T) {
	w := words{names: map[string]string{"JWKSURL": "jwks_url", "JWKSFile": "jwks_file", "Issuer": "issuer", "TLS": "tls", "GitHub": "github"}}
	for in, want := range map[string]string{
		"JWKSURL or JWKSFile give the keys; neither means discovery of Issuer.": "`jwks_url` or `jwks_file` give the keys; neither means discovery of Issuer.",
		"verified GitHub Actions tokens over TLS":                               "verified GitHub Actions tokens over TLS",
		"a path /x/JWKSFile and `JWKSFile` in code stay":                        "a path /x/JWKSFile and `JWKSFile` in code stay",
	} {
		if got := w.rewrite(in); got != want {
			t.Errorf("rewrite(%q)\n = %q\nwant %q", in, got, want)
		}
	}
}

func TestAnchor(t *testing.T) {
	for path, want := range map[string]string{
		"":                                 "top-level",
		"audit.checkpoint":                 "auditcheckpoint",
		"listeners[].aws_credentials":      "listenersaws_credentials",
		"credentials[].static.fields.NAME": "credentialsstaticfieldsname",
	} {
		if got := anchor(path); got != want {
			t.Errorf("anchor(%q) = %q, want %q", path, got, want)
		}
	}
}

// writeModule writes a module named like credbroker's, whose
// cmd/credbroker holds src, and returns its root.
func writeModule(t *testing.T, src string) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"go.mod":                 "module github.com/credbroker/credbroker\n\ngo 1.22\n",
		"cmd/credbroker/main.go": src,
	}
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// TestGenerateSmallModule runs the generator on a module of its own: a
// duration type, a section that decodes itself through a table, a field
// documented by its type, constants in comments.
func TestGenerateSmallModule(t *testing.T) {
	root := writeModule(t, `package main

import "time"

func main() {}

// DefaultWait is how long.
const DefaultWait = 90 * time.Second

// Config is the file.
type Config struct {
	// Wait is how long to wait; default DefaultWait.
	Wait Duration `+"`yaml:\"wait\"`"+`
	// Things are the things.
	Things []Thing `+"`yaml:\"things\"`"+`
	Inner *Inner `+"`yaml:\"inner\"`"+`
	// hidden is not a key.
	hidden string
	// Skipped is not a key either.
	Skipped string `+"`yaml:\"-\"`"+`
}

// Inner tunes the inside. Required.
type Inner struct {
	// CAFile holds certificates; default none. Not with OtherThing.
	CAFile string `+"`yaml:\"ca_file\"`"+`
	// OtherThing is other.
	OtherThing bool `+"`yaml:\"other_thing\"`"+`
}

// Duration is a duration.
type Duration time.Duration

// UnmarshalText parses it.
func (d *Duration) UnmarshalText(b []byte) error { return nil }

// Thing is one thing: a name and one key of kinds.
type Thing struct {
	// Name names it.
	Name string
	Kind string
	Conf any
}

// UnmarshalYAML decodes it.
func (t *Thing) UnmarshalYAML(n interface{ Decode(any) error }) error {
	switch "x" {
	case "name":
		return n.Decode(&t.Name)
	}
	_ = kinds["x"]
	return nil
}

type kind struct{ newConf func() any }

func kindOf[C any]() kind { return kind{newConf: func() any { return new(C) }} }

var kinds = map[string]kind{
	"apple": kindOf[Apple](),
	"pear":  {newConf: func() any { return new(Pear) }},
}

// Apple configures an apple.
type Apple struct {
	// Size is its size in cm; default 7.
	Size int `+"`yaml:\"size\"`"+`
}

// Pear configures a pear.
type Pear struct {
	// Ripe says whether it is; default false.
	Ripe bool `+"`yaml:\"ripe\"`"+`
}
`)
	b, err := Generate(root)
	if err != nil {
		t.Fatal(err)
	}
	ref := string(b)
	for _, want := range []string{
		"| `wait` | duration | `1m30s` | `wait` is how long to wait; default `1m30s`. |",
		"| `things` | list of [mappings](#things) |   | `things` are the things. |",
		"| `inner` | [mapping](#inner) | required | `inner` tunes the inside. Required. |",
		"| `inner.ca_file` | string | none | `ca_file` holds certificates; default none. Not with `other_thing`. |",
		"| `inner.other_thing` | boolean |   | `other_thing` is other. |",
		"`things[]` is one thing: a name and one key of `apple` or `pear`.",
		"| `things[].name` | string |   | `name` names it. |",
		"| `things[].apple` | [mapping](#thingsapple) |   | `apple` configures an apple. |",
		"| `things[].apple.size` | integer | `7` | `size` is its size in cm; default 7. |",
		"| `things[].pear.ripe` | boolean | `false` | `ripe` says whether it is; default false. |",
	} {
		if !strings.Contains(ref, want) {
			t.Errorf("the reference lacks %q:\n%s", want, ref)
		}
	}
	for _, absent := range []string{"hidden", "Skipped", "skipped"} {
		if strings.Contains(ref, absent) {
			t.Errorf("the reference names %s, which is not a key", absent)
		}
	}
}

// TestGenerateRefuses checks that the generator stops, saying what to do,
// rather than write a reference with a hole in it.
func TestGenerateRefuses(t *testing.T) {
	for name, c := range map[string]struct{ src, want string }{
		"undocumented": {`package main
func main() {}
// Config is the file.
type Config struct {
	Plain string ` + "`yaml:\"plain\"`" + `
}`, "plain: the field Config.Plain has no doc comment, nor has its type: document it"},
		"unknown self-decoding type": {`package main
func main() {}
// Config is the file.
type Config struct {
	// Odd is odd.
	Odd Odd ` + "`yaml:\"odd\"`" + `
}
// Odd decodes itself.
type Odd string
// UnmarshalText parses it.
func (o *Odd) UnmarshalText(b []byte) error { return nil }`, "cmd/credbroker.Odd decodes itself (UnmarshalYAML or UnmarshalText)"},
		"channel": {`package main
func main() {}
// Config is the file.
type Config struct {
	// C is a channel.
	C chan int ` + "`yaml:\"c\"`" + `
}`, "c: type chan int cannot be written in YAML"},
		"no Config": {`package main
func main() {}`, "declares no Config type"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Generate(writeModule(t, c.src))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Generate: %v, want an error containing %q", err, c.want)
			}
		})
	}
}
