package providers

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// ParseEndpoint parses the URL of an upstream the broker sends secrets to
// or receives them from: absolute https, or plain http only to a loopback
// host, with no user information or fragment. Its errors never repeat the
// URL, which might carry a password; callers add their own rules (no
// query, no path) to the parsed URL.
func ParseEndpoint(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, errors.New("not a URL")
	case u.User != nil:
		return nil, errors.New("must not carry user information")
	case u.Host == "":
		return nil, errors.New("must be an absolute URL with a host")
	case u.Fragment != "":
		return nil, errors.New("must not have a fragment")
	}
	switch u.Scheme {
	case "https":
		return u, nil
	case "http":
		if IsLoopback(u.Hostname()) {
			return u, nil
		}
		return nil, fmt.Errorf("must use https (plain http only to a loopback host, not %q): secrets travel on it", u.Hostname())
	}
	return nil, fmt.Errorf("scheme %q: must be https", u.Scheme)
}

// IsLoopback reports whether host names this machine: localhost or a
// loopback address.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Transport returns an HTTP transport for an upstream: TLS 1.2 or later,
// trusting the system roots and, when caFile is set, the PEM certificates
// in it.
func Transport(caFile string) (*http.Transport, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return tr, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", caFile)
	}
	tr.TLSClientConfig.RootCAs = pool
	return tr, nil
}
