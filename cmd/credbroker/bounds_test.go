package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
)

// TestNameBounds: a credential name that no credential can have is refused
// before it can bloat the audit row or the log, and the refusal is still
// recorded against the caller.
func TestNameBounds(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t-value\n")
	b := e.start()
	c := socketClient(e.socket)

	long := strings.Repeat("n", 15<<10)
	for _, name := range []string{long, strings.Repeat("a", 129), "-leading-dash", "sp%20ace", "ünï"} {
		r := call(t, c, http.MethodGet, "/v1/credentials/"+name, nil, nil)
		if r.Status != http.StatusBadRequest || !strings.Contains(r.Err.Error.Message, "invalid credential name") {
			t.Errorf("name of %d bytes: %d %s, want 400 invalid credential name", len(name), r.Status, r.Body)
			continue
		}
		row := auditRows(t, e.db)[r.Err.Error.DecisionID]
		if row.Decision != "error" || row.Subject != "unix:uid:0" || len(row.Credential) > 300 || len(row.Input) > 4096 {
			t.Errorf("name of %d bytes: audit row %s by %s, credential of %d bytes, input of %d bytes", len(name), row.Decision, row.Subject, len(row.Credential), len(row.Input))
		}
	}
	// 128 characters is a name; this one is simply not configured.
	if r := call(t, c, http.MethodGet, "/v1/credentials/"+strings.Repeat("a", 128), nil, nil); r.Status != http.StatusNotFound {
		t.Errorf("a 128-character name: %d %s, want 404", r.Status, r.Body)
	}
	for _, line := range strings.Split(b.logs.String(), "\n") {
		if len(line) > 4096 {
			t.Errorf("a log line of %d bytes: %.200s…", len(line), line)
		}
	}
	// The rest of the row is bounded too: the path the caller sent.
	rows, err := os.ReadFile(e.db)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(rows), long[:1024]) {
		t.Error("the 15 KB name reached the audit database")
	}
}

// TestUnroutedRefusals: requests no route matches, and HEAD, are refused
// with the JSON error shape and recorded; HEAD never issues a credential.
func TestUnroutedRefusals(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t-value\n")
	e.start()
	c := socketClient(e.socket)

	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/v2/credentials/demo"},
		{http.MethodGet, "/"},
		{http.MethodPut, "/v1/credentials/demo"},
		{http.MethodDelete, "/v1/credentials/demo"},
	} {
		r := call(t, c, tc.method, tc.path, nil, nil)
		if r.Status != http.StatusNotFound || r.Err.Error.Code != "not_found" || r.Err.Error.DecisionID == "" {
			t.Errorf("%s %s: %d %s, want the JSON 404 with a decision id", tc.method, tc.path, r.Status, r.Body)
			continue
		}
		if row := auditRows(t, e.db)[r.Err.Error.DecisionID]; row.Decision != "error" || row.Subject != "unix:uid:0" {
			t.Errorf("%s %s: audit row %s by %s, want an error against the caller", tc.method, tc.path, row.Decision, row.Subject)
		}
	}

	req, _ := http.NewRequest(http.MethodHead, "http://credbroker/v1/credentials/demo", nil)
	req.Header.Set("Credbroker-Request", "1")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD: %d, want 404", resp.StatusCode)
	}
	for _, row := range auditRows(t, e.db) {
		if row.Decision == "allow" {
			t.Errorf("a credential was issued: %s %s", row.DecisionID, row.Credential)
		}
	}
}

// TestAdminFloodUnderFDLimit: idle connections to the admin port cannot
// starve the socket API of descriptors. With 160 descriptors, 200 idle
// admin connections once stopped issuance.
func TestAdminFloodUnderFDLimit(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t-value\n")
	e.wrap = []string{"prlimit", "--nofile=160:160", "--"}
	b := e.start("--admin", "127.0.0.1:0")
	admin := adminAddr(t, b)
	c := socketClient(e.socket)

	var idle []net.Conn
	defer func() {
		for _, conn := range idle {
			conn.Close()
		}
	}()
	for i := 0; i < 200; i++ {
		conn, err := net.Dial("tcp", admin)
		if err != nil {
			t.Fatalf("admin connection %d: %v", i, err)
		}
		idle = append(idle, conn)
	}
	// Every connection has been accepted (or is queued) when a fresh one
	// gets an answer.
	if code, _ := httpGet(t, "http://"+admin+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	for i := 0; i < 20; i++ {
		if r := call(t, c, http.MethodGet, "/v1/credentials/demo", nil, nil); r.Status != http.StatusOK {
			t.Fatalf("request %d during the flood: %d %s\n%s", i, r.Status, r.Body, b.logs)
		}
	}
}

// TestCannotStartLine: a broker that cannot start says so on one plain
// line, besides its structured log.
func TestCannotStartLine(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t-value\n")
	blocker := e.write("blocker", "a file where the socket's directory should be")
	_, errOut, code := credbroker(t, "run", "--config", e.config, "--socket", blocker+"/s")
	if code == 0 {
		t.Fatal("the broker started")
	}
	var plain []string
	for _, line := range strings.Split(errOut, "\n") {
		if strings.HasPrefix(line, "credbroker: cannot start: ") {
			plain = append(plain, line)
		}
	}
	if len(plain) != 1 {
		t.Errorf("%d plain lines, want 1:\n%s", len(plain), errOut)
	}
}

// TestFDLimitWarning: a broker whose open-file limit is below what its
// connection caps let it hold says so at start, with the limit and the
// need; one whose caps fit says nothing.
func TestFDLimitWarning(t *testing.T) {
	for _, tc := range []struct {
		maxConns int
		warn     bool
	}{{1024, true}, {32, false}} {
		t.Run(fmt.Sprint(tc.maxConns), func(t *testing.T) {
			e := newEnv(t, e2ePolicies, e2eCredentials())
			e.write("secrets/demo", "s3cr3t-value\n")
			cfg, err := os.ReadFile(e.config)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(e.config, append(cfg, fmt.Sprintf("max_connections: %d\n", tc.maxConns)...), 0o600); err != nil {
				t.Fatal(err)
			}
			e.wrap = []string{"prlimit", "--nofile=256:256", "--"}
			b := e.start()
			logs := b.logs.String()
			warned := strings.Contains(logs, "open-file limit is below")
			switch {
			case warned != tc.warn:
				t.Fatalf("warned %v, want %v:\n%s", warned, tc.warn, logs)
			case tc.warn && !strings.Contains(logs, fmt.Sprintf(`"limit":256,"needed":%d`, fdsBase+fdsPerSocketConn*tc.maxConns)):
				t.Fatalf("the warning does not give the limit and the need:\n%s", logs)
			}
		})
	}
}
