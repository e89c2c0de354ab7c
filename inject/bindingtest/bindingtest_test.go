package bindingtest

import (
	"context"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
)

// flawed is a listener with known flaws, standing in for a broken
// injection listener: a reverse proxy that injects a secret.
type flawed struct {
	honorsHost bool // sends to the Host header's server
	keepsAuth  bool // leaves the client's Authorization and adds its own
}

// start serves the flawed listener on loopback TCP and returns a Target.
func (fl flawed) start(t *testing.T) Target {
	const secret = "flawed-secret-5e1"
	sink := NewSink(t)
	up := NewUpstream(sink)
	upstream := httptest.NewServer(up.Wrap(nil))
	t.Cleanup(upstream.Close)
	u, _ := url.Parse(upstream.URL)
	rp := &httputil.ReverseProxy{ErrorLog: log.New(io.Discard, "", 0), Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(u)
		if fl.honorsHost && pr.In.Host != "localhost" {
			pr.Out.URL.Host, pr.Out.Host = pr.In.Host, pr.In.Host
		}
		if fl.keepsAuth {
			pr.Out.Header.Add("Authorization", "Bearer "+secret)
			return
		}
		for k := range pr.Out.Header {
			if k == "Authorization" || strings.HasPrefix(k, "Proxy-") || strings.HasPrefix(k, "X-Amz-") {
				delete(pr.Out.Header, k)
			}
		}
		pr.Out.Header.Set("Authorization", "Bearer "+secret)
	}}
	listener := httptest.NewServer(rp)
	t.Cleanup(listener.Close)
	return Target{
		Dial: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", listener.Listener.Addr().String())
		},
		Secret: secret, Header: "Authorization", Value: "Bearer " + secret,
		UpstreamHost: u.Host, Upstream: up, Sink: sink,
	}
}

// TestCorpusCatchesFlaws checks the corpus fails listeners with known
// flaws, on the attacks that show them.
func TestCorpusCatchesFlaws(t *testing.T) {
	tests := []struct {
		name    string
		flawed  flawed
		attacks map[string]string // attack name: a problem it must report
	}{
		{"no smuggling checks", flawed{}, map[string]string{
			"duplicate Content-Length":             "want refused",
			"Content-Length and Transfer-Encoding": "want refused",
			"obs-fold":                             "want refused",
			"h2c upgrade":                          "want refused",
			"CONNECT to the sink":                  "want refused",
		}},
		{"destination from the Host header", flawed{honorsHost: true}, map[string]string{
			"forged Host header": "the sink received",
		}},
		{"client Authorization kept", flawed{keepsAuth: true}, map[string]string{
			"baseline": "sent 2 times",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target := tc.flawed.start(t)
			for _, a := range corpus(target.Header) {
				want, ok := tc.attacks[a.name]
				if !ok {
					continue
				}
				problems := strings.Join(target.attack(a), "\n")
				switch {
				case want == "" && problems != "":
					t.Errorf("%s: unexpected problems: %s", a.name, problems)
				case want != "" && !strings.Contains(problems, want):
					t.Errorf("%s: problems %q lack %q", a.name, problems, want)
				}
			}
		})
	}
}

// TestCorpusPassesSoundProxy checks the checks themselves on the attacks a
// plain Go reverse proxy that binds its destination handles correctly.
func TestCorpusPassesSoundProxy(t *testing.T) {
	target := flawed{}.start(t)
	for _, a := range corpus(target.Header) {
		switch a.name {
		case "baseline", "forged Host header", "absolute-form http", "user@host authority", "redirect to the sink",
			"Connection names Authorization", "lowercase credential headers":
			if p := target.attack(a); len(p) > 0 {
				t.Errorf("%s: %q", a.name, p)
			}
		}
	}
}
