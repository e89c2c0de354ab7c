package redistest_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"testing"

	"github.com/credbroker/credbroker/internal/redistest"
)

// A server starts with its users, the default user disabled, a Unix
// socket and a TLS port that requires the generated client certificate.
func TestStart(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{
		Users:          []string{"app on >app-password ~app:* +@all"},
		TLS:            true,
		TLSAuthClients: true,
	})
	anon := redistest.Dial(t, "tcp", srv.Addr)
	if r, err := anon.Do("GET", "app:x"); err != nil || !strings.HasPrefix(r.Str, "NOAUTH") {
		t.Fatalf("unauthenticated GET = %v, %v; want NOAUTH", r, err)
	}
	app := redistest.Dial(t, "unix", srv.Socket)
	app.MustDo(t, "AUTH", "app", "app-password")
	app.MustDo(t, "SET", "app:x", "1")
	if r, _ := app.Do("SET", "other", "1"); !strings.HasPrefix(r.Str, "NOPERM") {
		t.Errorf("SET outside the user's keys = %v, want NOPERM", r)
	}

	admin := srv.Admin(t)
	if r := admin.MustDo(t, "GET", "app:x"); r.Str != "1" {
		t.Errorf("admin GET = %v", r)
	}
	stats := srv.CommandStats(t, admin)
	if stats["auth"]["calls"] != "1" || stats["set"]["calls"] != "1" || stats["set"]["rejected_calls"] != "1" {
		t.Errorf("commandstats auth %v set %v", stats["auth"], stats["set"])
	}

	pool := x509.NewCertPool()
	ca, err := os.ReadFile(srv.TLS.CAFile)
	if err != nil || !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("CA file: %v", err)
	}
	cert, err := tls.LoadX509KeyPair(srv.TLS.ClientCertFile, srv.TLS.ClientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tls.Dial("tcp", srv.TLSAddr, &tls.Config{RootCAs: pool, ServerName: redistest.ServerName, Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatalf("TLS: %v", err)
	}
	c := redistest.NewConn(tc)
	defer c.Close()
	c.MustDo(t, "AUTH", "app", "app-password")
	if r := c.MustDo(t, "GET", "app:x"); r.Str != "1" {
		t.Errorf("GET over TLS = %v", r)
	}
	if !strings.Contains(srv.Log(), "Ready to accept connections") {
		t.Error("the log lacks the readiness line")
	}
}
