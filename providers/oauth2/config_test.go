package oauth2

import (
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func validConfig() Config {
	return Config{
		TokenURL:         "https://login.example.com/oauth/token",
		ClientID:         "broker",
		ClientSecretFile: "secrets/client",
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		edit func(*Config)
		want string // "" for a valid config
	}{
		{"minimal", func(*Config) {}, ""},
		{"everything", func(c *Config) {
			c.Scopes, c.Audience, c.Params = []string{"orders:read", "https://x/y"}, "https://api", map[string]string{"resource": "https://api"}
			c.AuthStyle, c.CAFile, c.RevocationURL, c.TTL = AuthPost, "ca.pem", "https://login.example.com/oauth/revoke", time.Minute
		}, ""},
		{"http to 127.0.0.1", func(c *Config) { c.TokenURL = "http://127.0.0.1:8080/token" }, ""},
		{"http to [::1]", func(c *Config) { c.TokenURL = "http://[::1]:8080/token" }, ""},
		{"http to localhost", func(c *Config) { c.TokenURL = "http://localhost/token" }, ""},
		{"no token_url", func(c *Config) { c.TokenURL = "" }, "token_url is required"},
		{"http to a remote host", func(c *Config) { c.TokenURL = "http://login.example.com/token" }, `token_url: must use https (plain http only to a loopback host, not "login.example.com")`},
		{"another scheme", func(c *Config) { c.TokenURL = "ftp://login.example.com/token" }, `scheme "ftp"`},
		{"relative", func(c *Config) { c.TokenURL = "/oauth/token" }, "must be an absolute URL with a host"},
		{"not a URL", func(c *Config) { c.TokenURL = "https://exa mple.com:x/" }, "token_url: not a URL"},
		{"user information", func(c *Config) { c.TokenURL = "https://broker:hunter2@login.example.com/token" }, "must not carry user information"},
		{"fragment", func(c *Config) { c.TokenURL = "https://login.example.com/token#x" }, "must not have a fragment"},
		{"revocation over http", func(c *Config) { c.RevocationURL = "http://login.example.com/revoke" }, "revocation_url: must use https"},
		{"no client_id", func(c *Config) { c.ClientID = "" }, "client_id is required"},
		{"no client_secret_file", func(c *Config) { c.ClientSecretFile = "" }, "client_secret_file is required"},
		{"scope with a space", func(c *Config) { c.Scopes = []string{"a b"} }, `scopes[0]: "a b" is not a scope`},
		{"empty scope", func(c *Config) { c.Scopes = []string{"a", ""} }, `scopes[1]: "" is not a scope`},
		{"scope with a quote", func(c *Config) { c.Scopes = []string{`a"`} }, "is not a scope"},
		{"params override grant_type", func(c *Config) { c.Params = map[string]string{"grant_type": "password"} }, `params: "grant_type" is set by the provider`},
		{"params override client_secret", func(c *Config) { c.Params = map[string]string{"Client_Secret": "x"} }, `params: "Client_Secret" is set by the provider`},
		{"params override scope", func(c *Config) { c.Params = map[string]string{"scope": "x"} }, `"scope" is set by the provider`},
		{"params override audience", func(c *Config) { c.Params = map[string]string{"audience": "x"} }, `"audience" is set by the provider`},
		{"params override client_id", func(c *Config) { c.Params = map[string]string{"client_id": "x"} }, `"client_id" is set by the provider`},
		{"empty param name", func(c *Config) { c.Params = map[string]string{"": "x"} }, "an empty parameter name"},
		{"unknown auth_style", func(c *Config) { c.AuthStyle = "jwt" }, `auth_style: "jwt" is neither "basic" nor "post"`},
		{"ca_file with a transport", func(c *Config) { c.CAFile, c.Transport = "ca.pem", http.DefaultTransport }, "ca_file cannot be combined with a custom transport"},
		{"negative ttl", func(c *Config) { c.TTL = -time.Second }, "ttl must not be negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.edit(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want %q", err, tt.want)
			case err != nil && !strings.HasPrefix(err.Error(), "oauth2: "):
				t.Errorf("error %q lacks the package prefix", err)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error repeats the URL's password: %v", err)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Config{
		TokenURL:  "http://login.example.com/token",
		Scopes:    []string{"a b"},
		Params:    map[string]string{"scope": "x"},
		AuthStyle: "mtls",
		TTL:       -1,
	}
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"token_url: must use https", "client_id is required", "client_secret_file is required",
		"scopes[0]", `params: "scope"`, `auth_style: "mtls"`, "ttl must not be negative"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// TestValidateDoesNoIO: files that do not exist are the loader's and New's
// concern, not Validate's.
func TestValidateDoesNoIO(t *testing.T) {
	c := validConfig()
	c.ClientSecretFile, c.CAFile = "/nonexistent/secret", "/nonexistent/ca.pem"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestNewRefuses(t *testing.T) {
	dir := t.TempDir()
	secret := writeFile(t, filepath.Join(dir, "secret"), "s3cret-CANARY\n")
	empty := writeFile(t, filepath.Join(dir, "empty"), "\n")
	notPEM := writeFile(t, filepath.Join(dir, "not.pem"), "s3cret-CANARY is not a certificate")
	for _, tt := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"an invalid config", func(c *Config) { c.ClientID = "" }, "client_id is required"},
		{"a missing secret file", func(c *Config) { c.ClientSecretFile = filepath.Join(dir, "nope") }, "client_secret_file: open " + filepath.Join(dir, "nope") + ": no such file"},
		{"an empty secret file", func(c *Config) { c.ClientSecretFile = empty }, "client_secret_file " + empty + " is empty"},
		{"a missing ca_file", func(c *Config) { c.CAFile = filepath.Join(dir, "nope.pem") }, "ca_file: open"},
		{"a ca_file without certificates", func(c *Config) { c.CAFile = notPEM }, "no PEM certificate in it"},
		{"revocation_url in New", func(c *Config) { c.RevocationURL = "https://login.example.com/revoke" }, "build the provider with NewRevoking or Open"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			c.Name, c.ClientSecretFile = "partner-api", secret
			tt.edit(&c)
			_, err := New(c)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "CANARY") {
				t.Errorf("error carries the secret: %v", err)
			}
		})
	}
	c := validConfig()
	c.ClientSecretFile = secret
	if _, err := NewRevoking(c); err == nil || !strings.Contains(err.Error(), "NewRevoking needs revocation_url") {
		t.Errorf("NewRevoking without revocation_url: %v", err)
	}
}

// TestYAML decodes the shape the package documentation shows, strictly, as
// the config loader does.
func TestYAML(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	// The oauth2: block of the documented example, without comment markers.
	var block []string
	in := false
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimPrefix(line, "//\t")
		switch {
		case strings.TrimSpace(line) == "oauth2:":
			in = true
		case in && strings.HasPrefix(line, "      "):
			block = append(block, strings.TrimPrefix(line, "      "))
		case in:
			in = false
		}
	}
	if len(block) == 0 {
		t.Fatal("doc.go has no oauth2: example")
	}
	dec := yaml.NewDecoder(strings.NewReader(strings.Join(block, "\n")))
	dec.KnownFields(true)
	var got Config
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("the documented example does not decode: %v", err)
	}
	want := Config{
		TokenURL:         "https://login.example.com/oauth/token",
		ClientID:         "broker-partner",
		ClientSecretFile: "secrets/partner-client-secret",
		Scopes:           []string{"orders:read", "orders:write"},
		Audience:         "https://api.partner.example",
		Params:           map[string]string{"resource": "https://api.partner.example"},
		AuthStyle:        AuthBasic,
		CAFile:           "secrets/login-ca.pem",
		RevocationURL:    "https://login.example.com/oauth/revoke",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %+v\nwant    %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("the documented example is invalid: %v", err)
	}
	// Runtime-only fields are not keys.
	dec = yaml.NewDecoder(strings.NewReader("token_url: https://x/\nttl: 1h\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&Config{}); err == nil {
		t.Error("ttl decoded as an oauth2 key")
	}
}

func TestPathsAndFields(t *testing.T) {
	c := validConfig()
	c.CAFile = "ca.pem"
	for _, p := range c.Paths() {
		*p = "/etc/credbroker/" + *p
	}
	if c.ClientSecretFile != "/etc/credbroker/secrets/client" || c.CAFile != "/etc/credbroker/ca.pem" {
		t.Errorf("Paths did not reach both file fields: %+v", c)
	}
	if got := c.Fields(); !reflect.DeepEqual(got, []string{FieldToken, FieldTokenType}) {
		t.Errorf("Fields() = %v", got)
	}
}
