package providers

import (
	"fmt"
	"log/slog"
)

// Secret is a credential value. It never prints: String, GoString, Format,
// LogValue and MarshalJSON all redact, so a Secret that slips into a log
// line, an error or a JSON document shows as "[redacted]". Reveal is the one
// way to read it, used only where the value is delivered.
type Secret struct {
	b []byte
}

const redacted = "[redacted]"

// NewSecret wraps b. The Secret keeps b; callers must not modify it later.
func NewSecret(b []byte) Secret { return Secret{b: b} }

// Reveal returns the secret value. Call it only to deliver the credential.
func (s Secret) Reveal() []byte { return s.b }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return len(s.b) == 0 }

func (s Secret) String() string   { return redacted }
func (s Secret) GoString() string { return redacted }

// Format redacts under every verb, including %x and %q.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue redacts in slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON redacts in JSON output; delivery code builds its reply from
// Reveal explicitly.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText redacts in text encodings.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
