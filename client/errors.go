package client

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Sentinels for errors.Is. A refusal by the broker (*Error) matches the one
// of its code; ErrUnreachable and ErrExpired are wrapped by the errors that
// describe them.
var (
	// ErrDenied: no policy allows this workload the credential, or one
	// denies it (403 denied).
	ErrDenied = errors.New("credbroker: denied")
	// ErrUnauthenticated: the caller's identity could not be established —
	// a bad or expired token, evidence no attestor accepts, a process that
	// is not the one that connected (401 unauthenticated).
	ErrUnauthenticated = errors.New("credbroker: unauthenticated")
	// ErrNotFound: the broker has no credential of that name (404
	// not_found).
	ErrNotFound = errors.New("credbroker: not found")
	// ErrBadRequest: the request is malformed, such as a name with
	// characters credential names cannot have (400 bad_request, and other
	// 4xx statuses).
	ErrBadRequest = errors.New("credbroker: bad request")
	// ErrUnavailable: the broker could not serve the credential now — its
	// provider or audit log failed, or the connection broke; try again
	// later (503 unavailable, and other 5xx statuses).
	ErrUnavailable = errors.New("credbroker: unavailable")
	// ErrUnreachable: nothing answered on the socket — no broker runs
	// there, or this process may not connect to it.
	ErrUnreachable = errors.New("credbroker: cannot reach the broker")
	// ErrExpired: a Source's credential expired before a refresh
	// succeeded.
	ErrExpired = errors.New("credbroker: credential expired")
)

// Error codes of the socket API, as in Error.Code.
const (
	CodeBadRequest      = "bad_request"
	CodeUnauthenticated = "unauthenticated"
	CodeDenied          = "denied"
	CodeNotFound        = "not_found"
	CodeUnavailable     = "unavailable"
)

// maxMessage bounds the broker's message kept in an Error.
const maxMessage = 1024

// Error is a refusal by the broker: {"error":{"code","message",
// "decision_id"}} with its HTTP status. Every refusal is recorded in the
// broker's audit log under DecisionID.
type Error struct {
	// Code is the socket API's error code (CodeDenied …); when the broker
	// sent none, the code its Status stands for.
	Code string
	// Message is the broker's explanation, such as "denied by policy
	// nobody-reads-forbidden"; it never holds a secret.
	Message string
	// DecisionID names the audit record of the refusal, when there is one.
	DecisionID string
	// Status is the HTTP status, or 0 when the client refused the request
	// itself before sending it.
	Status int
}

// Error reads "credbroker: MESSAGE (STATUS CODE, decision ID)".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("credbroker: ")
	b.WriteString(e.Message)
	if e.Status == 0 && e.DecisionID == "" {
		return b.String()
	}
	b.WriteString(" (")
	if e.Status != 0 {
		fmt.Fprintf(&b, "%d ", e.Status)
	}
	b.WriteString(e.Code)
	if e.DecisionID != "" {
		b.WriteString(", decision ")
		b.WriteString(e.DecisionID)
	}
	b.WriteString(")")
	return b.String()
}

// Is matches the sentinel of e's code, or of its status when the code is
// one this client does not know.
func (e *Error) Is(target error) bool {
	s := sentinelOf(e.Code)
	if s == nil {
		s = sentinelOf(codeOf(e.Status))
	}
	return s != nil && s == target
}

func sentinelOf(code string) error {
	switch code {
	case CodeDenied:
		return ErrDenied
	case CodeUnauthenticated:
		return ErrUnauthenticated
	case CodeNotFound:
		return ErrNotFound
	case CodeBadRequest:
		return ErrBadRequest
	case CodeUnavailable:
		return ErrUnavailable
	}
	return nil
}

// codeOf is the code a status stands for, when the body gave none.
func codeOf(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return CodeUnauthenticated
	case status == http.StatusForbidden:
		return CodeDenied
	case status == http.StatusNotFound:
		return CodeNotFound
	case status >= 400 && status < 500:
		return CodeBadRequest
	case status >= 500:
		return CodeUnavailable
	}
	return ""
}

// cleanMessage bounds a message from the broker and drops control
// characters, so that it cannot rewrite a terminal or forge log lines.
func cleanMessage(s string) string {
	if len(s) > maxMessage {
		s = s[:maxMessage] + "…" // a rune cut in two becomes RuneError, dropped below
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return -1
		}
		return r
	}, s)
}
