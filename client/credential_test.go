package client_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/credbroker/credbroker/client"
)

// TestCredentialNeverPrints feeds a credential of the real broker through
// every verb, slog handler and encoder an application might log it with.
func TestCredentialNeverPrints(t *testing.T) {
	cred, err := client.New(shared.socket).Get(ctxT(t), "demo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3v", "%-v"} {
		out = append(out, fmt.Sprintf(verb, cred), fmt.Sprintf(verb, *cred), fmt.Sprintf(verb, []*client.Credential{cred}), fmt.Sprintf(verb, map[string]client.Credential{"k": *cred}))
	}
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var b bytes.Buffer
		slog.New(h(&b)).Info("got", "cred", cred, "value", *cred)
		out = append(out, b.String())
	}
	out = append(out, fmt.Sprintf("%T %v", cred, cred))
	j, err := json.Marshal(struct{ C *client.Credential }{cred})
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, string(j), fmt.Sprint(fmt.Errorf("using %v: %w", cred, errFake)))
	for _, s := range out {
		if strings.Contains(s, sharedSecret) || strings.Contains(s, fmt.Sprintf("%x", sharedSecret)) {
			t.Errorf("the secret printed: %s", s)
		}
		if !strings.Contains(s, "demo") {
			t.Errorf("the credential is unnamed: %s", s)
		}
	}
	if want := `credential "demo" (kind static, fields value, expires ` + cred.ExpiresAt.UTC().Format(time.RFC3339); !strings.HasPrefix(cred.String(), want) {
		t.Errorf("String %q, want prefix %q", cred, want)
	}
	if !strings.Contains(string(j), `"data":{"value":"[redacted]"}`) || !strings.Contains(fmt.Sprintf("%#v", cred), `Data:map[string]string{"value":"[redacted]"}`) {
		t.Errorf("json %s, GoString %#v", j, cred)
	}
}

var errFake = fmt.Errorf("fake")
