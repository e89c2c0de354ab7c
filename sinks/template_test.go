package sinks

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/credbroker/credbroker/client"
)

// canary is a secret value the tests look for where it must not be.
const canary = "canary-S3cr3t-'\"$x"

func testCredential() *client.Credential {
	return &client.Credential{
		Name: "orders-db", Kind: "static",
		Data:      map[string]string{"username": "app", "password": canary},
		ExpiresAt: time.Date(2030, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600)),
		LeaseID:   "lease-1", DecisionID: "dec-1",
	}
}

func TestExecute(t *testing.T) {
	tests := []struct {
		name, template, want string
	}{
		{"field", "PGPASSWORD={{.password}}\n", "PGPASSWORD=" + canary + "\n"},
		{"several fields", "{{.username}}:{{.password}}", "app:" + canary},
		{"metadata", "{{.expires_at}} {{.lease_id}}", "2030-01-02T02:04:05Z lease-1"},
		{"json", `{"password": {{json .password}}}`, `{"password": "canary-S3cr3t-'\"$x"}`},
		{"shellquote", "export P={{shellquote .password}}", `export P='canary-S3cr3t-'\''"$x'`},
		{"base64", "{{base64 .username}}", "YXBw"},
		{"printf", `{{printf "%s@db" .username}}`, "app@db"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := parseTemplate("t", tt.template)
			if err != nil {
				t.Fatal(err)
			}
			got, err := execute(tmpl, testCredential())
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("rendered %q, want %q", got, tt.want)
			}
		})
	}
	// The json function's output is valid JSON holding the value.
	tmpl, _ := parseTemplate("t", `{"p": {{json .password}}}`)
	out, _ := execute(tmpl, testCredential())
	var v map[string]string
	if err := json.Unmarshal(out, &v); err != nil || v["p"] != canary {
		t.Errorf("json output %s decodes to %v, %v", out, v, err)
	}
}

func TestDataFieldWinsOverMetadata(t *testing.T) {
	c := testCredential()
	c.Data["lease_id"] = "field"
	tmpl, _ := parseTemplate("t", "{{.lease_id}}")
	if got, _ := execute(tmpl, c); string(got) != "field" {
		t.Errorf("{{.lease_id}} = %q, want the data field's value", got)
	}
}

func TestExecuteErrors(t *testing.T) {
	tests := []struct {
		name, template string
		want           []string
	}{
		{"missing field", "{{.pasword}}", []string{`no entry for key "pasword"`, `credential "orders-db" has expires_at, lease_id, password, username`}},
		{"error about the value", `{{index .password 99}}`, []string{"index out of range"}},
		{"error in a branch taken on the value", "{{if eq .password `" + canary + "`}}{{len 3}}{{end}}", []string{"len of type int"}},
		{"too large", `{{range 2000000}}x{{end}}`, []string{"over 1048576 bytes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := parseTemplate("t", tt.template)
			if err != nil {
				t.Fatal(err)
			}
			out, err := execute(tmpl, testCredential())
			if err == nil {
				t.Fatalf("rendered %q, want an error", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q, want %q in it", err, w)
				}
			}
			if strings.Contains(err.Error(), canary) {
				t.Errorf("error %q holds the secret", err)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	got := redact(`can't use "`+canary+`" and "abc"`, map[string]string{"password": canary, "short": "abc"})
	if want := `can't use "[redacted]" and "abc"`; got != want {
		t.Errorf("redact = %q, want %q", got, want)
	}
}

// FuzzRender renders arbitrary templates over an arbitrary value: no
// panic, the output bounded, and an error never shows the value.
func FuzzRender(f *testing.F) {
	for _, s := range []string{"PGPASSWORD={{.password}}\n", "{{json .password}}", "{{.nope}}", "{{index .password 9}}",
		"{{shellquote .password}}{{base64 .password}}", `{{printf "%q" .password}}`, "{{if .password}}{{len 1}}{{end}}", "{{template \"x\"}}"} {
		f.Add(s, canary)
	}
	f.Fuzz(func(t *testing.T, text, value string) {
		if strings.Contains(text, "range") || strings.Contains(text, "define") || strings.Contains(text, "block") {
			t.Skip("loops and recursion are bounded by the operator's own template, not by this package")
		}
		tmpl, err := parseTemplate("t", text)
		if err != nil {
			return
		}
		c := &client.Credential{Name: "x", Data: map[string]string{"password": value}}
		out, err := execute(tmpl, c)
		if len(out) > MaxFileBytes {
			t.Fatalf("rendered %d bytes", len(out))
		}
		if err != nil && len(value) >= minRedacted && !strings.Contains("[redacted]", value) && strings.Contains(err.Error(), value) {
			t.Fatalf("error %q shows the value %q", err, value)
		}
	})
}
