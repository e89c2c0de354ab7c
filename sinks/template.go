package sinks

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/credbroker/credbroker/client"
)

// Metadata keys of a template's data, beside the credential's fields.
const (
	// KeyExpiresAt is the credential's expiry, RFC 3339 in UTC.
	KeyExpiresAt = "expires_at"
	// KeyLeaseID is the credential's lease id.
	KeyLeaseID = "lease_id"
)

// funcs are the functions a template may call beside text/template's own.
var funcs = template.FuncMap{
	"json":       jsonString,
	"shellquote": shellQuote,
	"base64":     func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
}

// jsonString is v as a JSON value: a string quoted and escaped, for JSON
// and YAML files.
func jsonString(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", errors.New("json: value cannot be encoded")
	}
	return string(b), nil
}

// shellQuote quotes s for POSIX shells (and env files read by them).
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// templateData is what a template sees: the credential's data fields by
// name, and expires_at and lease_id unless a field has one of those names.
func templateData(c *client.Credential) map[string]any {
	d := make(map[string]any, len(c.Data)+2)
	if !c.ExpiresAt.IsZero() {
		d[KeyExpiresAt] = c.ExpiresAt.UTC().Format(time.RFC3339)
	}
	d[KeyLeaseID] = c.LeaseID
	for k, v := range c.Data {
		d[k] = v
	}
	return d
}

// errTooLarge ends a rendering over MaxFileBytes.
var errTooLarge = fmt.Errorf("the rendered file would be over %d bytes", MaxFileBytes)

// limitedBuffer is a buffer that refuses to grow past MaxFileBytes.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > MaxFileBytes {
		return 0, errTooLarge
	}
	return b.Buffer.Write(p)
}

var missingKey = regexp.MustCompile(`map has no entry for key "([^"]*)"`)

// execute renders t with c. An error never holds a value of c: a missing
// field is named with the fields there are, and any other message is
// scrubbed of c's values.
func execute(t *template.Template, c *client.Credential) ([]byte, error) {
	var b limitedBuffer
	data := templateData(c)
	err := t.Execute(&b, data)
	switch {
	case err == nil:
		return b.Bytes(), nil
	case errors.Is(err, errTooLarge):
		return nil, errTooLarge
	}
	msg := redact(err.Error(), c.Data)
	if m := missingKey.FindStringSubmatch(msg); m != nil {
		msg += fmt.Sprintf(" (credential %q has %s)", c.Name, strings.Join(slices.Sorted(maps.Keys(data)), ", "))
	}
	return nil, errors.New(msg)
}

// minRedacted is the shortest value redact replaces: shorter ones would
// mangle the message and are no secret worth the name.
const minRedacted = 4

// redact replaces every value of data found in msg with [redacted].
func redact(msg string, data map[string]string) string {
	for _, v := range data {
		if len(v) >= minRedacted {
			msg = strings.ReplaceAll(msg, v, "[redacted]")
		}
	}
	return msg
}
