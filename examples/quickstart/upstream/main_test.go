package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

func TestMask(t *testing.T) {
	for in, want := range map[string]string{
		"": "(none)",
		"Bearer quickstart-demo-secret-not-for-production": "Bearer quic******** (41 characters; all but the first 4 masked)",
		"token-without-scheme":                             "toke******** (20 characters; all but the first 4 masked)",
		"Bearer abcd":                                      "Bearer **** (4 characters, too short to show any)",
		"Basic ÄÖÜßéèêë":                                   "Basic ÄÖÜß******** (8 characters; all but the first 4 masked)",
	} {
		if got := mask(in); got != want {
			t.Errorf("mask(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzMask checks that nothing of a credential past its first characters
// reaches the output: replacing those characters changes nothing.
func FuzzMask(f *testing.F) {
	for _, s := range []string{"", "Bearer quickstart-demo-secret", "abc", "Bearer abcd", "Basic ÄÖÜßéèêë", "a b c", "\xff\xfe x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		prefix, cred := "", v
		if s, c, ok := strings.Cut(v, " "); ok {
			prefix, cred = s+" ", c
		}
		r := []rune(cred)
		from := shown
		if len(r) <= shown {
			from = 0
		}
		for i := from; i < len(r); i++ {
			r[i] = 'x'
		}
		if a, b := mask(v), mask(prefix+string(r)); a != b {
			t.Errorf("mask(%q) = %q but mask(%q) = %q: masked characters show", v, a, prefix+string(r), b)
		}
	})
}

// TestEchoAndCall serves echo on a Unix socket, as the broker's listener
// is served in the quickstart, and calls it with -call's client.
func TestEchoAndCall(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("Authorization", "Bearer s3cr3t-value")
		echo(w, r)
	}))
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	var out bytes.Buffer
	if err := get(context.Background(), "unix://"+sock, "/hello?x=1", &out); err != nil {
		t.Fatal(err)
	}
	want := "demo upstream received: GET /hello?x=1\n  Authorization: Bearer s3cr******** (12 characters; all but the first 4 masked)\n"
	if out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
	if err := run(context.Background(), []string{"-call", "unix://" + sock}, &out); err == nil {
		t.Error("-call without a path: no error")
	}
}
