package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/api"
)

// Sentinels callers branch on. Their text, like an *Error's, has no
// package prefix: every error leaves the package through Credential, Renew
// or Revoke, which prefix it with "vault: credential <name>: ".
var (
	// ErrNoCallerToken is returned with auth.jwt.pass_caller_token when the
	// request carries no verified caller token.
	ErrNoCallerToken = errors.New("pass_caller_token is set but the request carries no verified caller token")
	// ErrNotFound is wrapped when the secret, or a configured field of it,
	// is missing.
	ErrNotFound = errors.New("not found")
	// ErrNotRenewable is wrapped when a lease cannot be extended and must
	// be replaced by a new issue.
	ErrNotRenewable = errors.New("lease cannot be renewed")
	// ErrAuth is wrapped when the provider has no usable Vault token: its
	// token file, secret id or JWT could not be read, or Vault refused the
	// login.
	ErrAuth = errors.New("no usable Vault token")
)

// Bounds on what an error repeats from Vault's answer.
const (
	maxMessages   = 4
	maxMessageLen = 300
)

// Error is a failed request to Vault. Its text names the operation, the
// Vault path and Vault's own error messages, bounded, reduced to printable
// ASCII, and with every secret the request carried redacted; the response
// body is never kept. Unwrap returns the cause (a context error, a network
// error) for errors.Is, and the sentinel the failure belongs to.
type Error struct {
	// Op is what was attempted: "login", "read", "renew", "revoke",
	// "lookup-self", "renew-self".
	Op string
	// Path is the Vault API path, without the /v1/ prefix.
	Path string
	// Status is the HTTP status Vault answered; 0 when it did not answer.
	Status int
	// Messages are Vault's error messages, sanitised.
	Messages []string
	// Detail describes a failure without a Vault answer (a network
	// error), sanitised.
	Detail string

	kind  error // a sentinel, or nil
	cause error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", e.Op, e.Path)
	switch {
	case e.Status != 0:
		fmt.Fprintf(&b, ": Vault answered %d %s", e.Status, http.StatusText(e.Status))
		if len(e.Messages) > 0 {
			fmt.Fprintf(&b, ": %s", strings.Join(e.Messages, "; "))
		}
	case e.Detail != "":
		fmt.Fprintf(&b, ": %s", e.Detail)
	}
	return b.String()
}

// Unwrap returns the sentinel and the cause.
func (e *Error) Unwrap() []error {
	var out []error
	if e.kind != nil {
		out = append(out, e.kind)
	}
	if e.cause != nil {
		out = append(out, e.cause)
	}
	return out
}

// requestError builds an *Error from err, redacting secrets (the token,
// secret id or JWT the request carried) from everything it keeps. The
// cause is kept only for errors.Is; its text is not.
func requestError(op, path string, err error, kind error, secrets ...[]byte) *Error {
	e := &Error{Op: op, Path: path, kind: kind, cause: err}
	var re *api.ResponseError
	switch {
	case errors.As(err, &re):
		e.Status = re.StatusCode
		e.cause = nil // its text repeats the URL and raw body
		for i, m := range re.Errors {
			if i == maxMessages {
				e.Messages = append(e.Messages, fmt.Sprintf("(%d more)", len(re.Errors)-maxMessages))
				break
			}
			if re.RawError {
				m = "a response that is not Vault's JSON"
			}
			e.Messages = append(e.Messages, sanitize(m, secrets))
		}
	case errors.Is(err, context.Canceled):
		e.Detail = "cancelled"
	case errors.Is(err, context.DeadlineExceeded):
		e.Detail = "deadline exceeded"
	default:
		e.Detail = sanitize(err.Error(), secrets)
	}
	return e
}

// sanitize bounds s, reduces it to printable ASCII and redacts secrets.
func sanitize(s string, secrets [][]byte) string {
	for _, sec := range secrets {
		if len(sec) > 0 {
			s = strings.ReplaceAll(s, string(sec), "[redacted]")
		}
	}
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxMessageLen {
		s = s[:maxMessageLen] + "..."
	}
	return s
}

// status returns the HTTP status of a Vault answer in err, or 0.
func status(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}
