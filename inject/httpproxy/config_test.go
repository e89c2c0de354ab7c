package httpproxy

import (
	"slices"
	"strings"
	"testing"
)

func validConfig() Config {
	return Config{Listen: "127.0.0.1:8081", Upstream: "https://api.example.com", Credential: "partner-api"}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		adjust func(*Config)
		want   []string // substrings of the error; none: valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"unix listen", func(c *Config) { c.Listen = "unix:///run/app/api.sock" }, nil},
		{"ipv6 loopback", func(c *Config) { c.Listen = "[::1]:9000" }, nil},
		{"localhost", func(c *Config) { c.Listen = "localhost:9000" }, nil},
		{"http to loopback", func(c *Config) { c.Upstream = "http://127.0.0.1:8080/base" }, nil},
		{"basic auth", func(c *Config) { c.Header = HeaderConfig{Value: "Basic {{basic .username .password}}"} }, nil},
		{"tls files", func(c *Config) { c.TLS = TLSConfig{CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem"} }, nil},
		{"everything missing", func(c *Config) { *c = Config{} }, []string{"listen: required", "upstream is required", "credential is required"}},
		{"public listen", func(c *Config) { c.Listen = "0.0.0.0:8081" }, []string{"not a loopback address"}},
		{"listen without port", func(c *Config) { c.Listen = "127.0.0.1" }, []string{"want host:port"}},
		{"bad port", func(c *Config) { c.Listen = "127.0.0.1:99999" }, []string{"not a port number"}},
		{"relative unix path", func(c *Config) { c.Listen = "unix://run/api.sock" }, []string{"clean absolute path"}},
		{"plain http upstream", func(c *Config) { c.Upstream = "http://api.example.com" }, []string{"must use https"}},
		{"upstream with user", func(c *Config) { c.Upstream = "https://u:secretpw@api.example.com" }, []string{"user information"}},
		{"upstream with query", func(c *Config) { c.Upstream = "https://api.example.com/?k=v" }, []string{"query"}},
		{"bad credential name", func(c *Config) { c.Credential = "-x" }, []string{"not a credential name"}},
		{"hop-by-hop header", func(c *Config) { c.Header.Name = "Connection" }, []string{"hop-by-hop"}},
		{"host header", func(c *Config) { c.Header.Name = "host" }, []string{"Host cannot"}},
		{"header name with space", func(c *Config) { c.Header.Name = "X Key" }, []string{"not a header name"}},
		{"template syntax", func(c *Config) { c.Header.Value = "Bearer {{.token" }, []string{"header.value"}},
		{"template range", func(c *Config) { c.Header.Value = "{{range .x}}{{end}}" }, []string{"not supported"}},
		{"template nested field", func(c *Config) { c.Header.Value = "{{.a.b}}" }, []string{"not supported"}},
		{"template printf", func(c *Config) { c.Header.Value = `{{printf "%s" .token}}` }, []string{"not supported"}},
		{"template index", func(c *Config) { c.Header.Value = `{{index . "token"}}` }, []string{"not supported"}},
		{"template variable", func(c *Config) { c.Header.Value = `{{$x := .token}}{{$x}}` }, []string{"not supported"}},
		{"template basic arity", func(c *Config) { c.Header.Value = `{{basic .token}}` }, []string{"takes 2"}},
		{"literal CRLF", func(c *Config) { c.Header.Value = "{{.token}}\r\nX-Injected: 1" }, []string{"control characters"}},
		{"cert without key", func(c *Config) { c.TLS.CertFile = "c.pem" }, []string{"go together"}},
		{"negative drain", func(c *Config) { c.DrainTimeout = -1 }, []string{"drain_timeout"}},
		{"sigv4", func(c *Config) { c.SigV4 = &SigV4Config{Service: "s3", Region: "us-east-1"} }, nil},
		{"sigv4 execute-api", func(c *Config) { c.SigV4 = &SigV4Config{Service: "execute-api", Region: "ap-southeast-2"} }, nil},
		{"sigv4 with a header", func(c *Config) {
			c.SigV4 = &SigV4Config{Service: "s3", Region: "us-east-1"}
			c.Header.Name = "X-Api-Key"
		}, []string{"header and sigv4 are alternatives"}},
		{"sigv4 empty", func(c *Config) { c.SigV4 = &SigV4Config{} }, []string{"sigv4: service is required", "sigv4: region is required"}},
		{"sigv4 shapes", func(c *Config) { c.SigV4 = &SigV4Config{Service: "S3", Region: "us east 1"} }, []string{`service "S3" is not`, `region "us east 1" is not`}},
		{"sigv4 hyphens", func(c *Config) { c.SigV4 = &SigV4Config{Service: "-s3", Region: "us-east-"} }, []string{"service", "region"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.adjust(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted it, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "secretpw") {
				t.Errorf("error repeats the upstream's password: %q", err)
			}
		})
	}
}

func TestFields(t *testing.T) {
	tests := []struct {
		value string
		want  []string
	}{
		{"", []string{"token"}}, // the default, Bearer {{.token}}
		{"Bearer {{.token}}", []string{"token"}},
		{"Basic {{basic .username .password}}", []string{"username", "password"}},
		{`{{basic .token ""}}{{.token}}`, []string{"token"}},
		{"{{base64 .key}}-{{/* a comment */}}{{.id}}", []string{"key", "id"}},
		{"static", nil},
		{"{{.a.b}}", nil}, // invalid: no fields
	}
	for _, tc := range tests {
		c := validConfig()
		c.Header.Value = tc.value
		if got := c.Fields(); !slices.Equal(got, tc.want) {
			t.Errorf("Fields of %q = %q, want %q", tc.value, got, tc.want)
		}
	}
	c := validConfig()
	c.SigV4 = &SigV4Config{Service: "s3", Region: "us-east-1"}
	if got, want := c.Fields(), []string{"access_key_id", "secret_access_key", "session_token"}; !slices.Equal(got, want) {
		t.Errorf("Fields with sigv4 = %q, want %q", got, want)
	}
}

func TestNetwork(t *testing.T) {
	for _, tc := range []struct{ listen, network, addr string }{
		{"127.0.0.1:8081", "tcp", "127.0.0.1:8081"},
		{"unix:///run/a.sock", "unix", "/run/a.sock"},
	} {
		c := Config{Listen: tc.listen}
		if n, a := c.Network(); n != tc.network || a != tc.addr {
			t.Errorf("Network of %q = %q %q", tc.listen, n, a)
		}
	}
}
