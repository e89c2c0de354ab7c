package client

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Credential is a credential the broker granted.
//
// Data holds its secret values. A Credential never prints them: String,
// GoString, Format (under every verb), LogValue and MarshalJSON show the
// field names instead, so a Credential that slips into a log line, an
// error or a JSON document reveals nothing. Read Data where the value is
// used.
type Credential struct {
	// Name is the credential's name in the broker's configuration.
	Name string
	// Kind is the provider that issued it: static, postgres, aws_sts …
	Kind string
	// Data maps each field (username, password, value …) to its secret
	// value.
	Data map[string]string
	// ExpiresAt is when the credential stops being valid, and when the
	// broker's lease on it ends.
	ExpiresAt time.Time
	// LeaseID names the lease in the broker's audit log.
	LeaseID string
	// DecisionID names the audit record of the decision that granted it.
	DecisionID string
}

const redacted = "[redacted]"

// Fields returns the names of c's data fields, sorted.
func (c Credential) Fields() []string {
	names := make([]string, 0, len(c.Data))
	for k := range c.Data {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// String describes c without its values.
func (c Credential) String() string {
	return fmt.Sprintf("credential %q (kind %s, fields %s, expires %s, lease %s, decision %s)",
		c.Name, c.Kind, strings.Join(c.Fields(), ","), c.ExpiresAt.UTC().Format(time.RFC3339), c.LeaseID, c.DecisionID)
}

// GoString is the %#v form, values redacted.
func (c Credential) GoString() string {
	data := make([]string, 0, len(c.Data))
	for _, k := range c.Fields() {
		data = append(data, fmt.Sprintf("%q:%q", k, redacted))
	}
	return fmt.Sprintf("client.Credential{Name:%q, Kind:%q, Data:map[string]string{%s}, ExpiresAt:%q, LeaseID:%q, DecisionID:%q}",
		c.Name, c.Kind, strings.Join(data, ", "), c.ExpiresAt.UTC().Format(time.RFC3339Nano), c.LeaseID, c.DecisionID)
}

// Format prints GoString under %#v and String under every other verb, so
// that no verb (%x, %d, %+v …) reaches Data.
func (c Credential) Format(f fmt.State, verb rune) {
	s := c.String()
	if verb == 'v' && f.Flag('#') {
		s = c.GoString()
	}
	_, _ = f.Write([]byte(s))
}

// LogValue is c in slog output: its name, kind, field names, expiry, lease
// and decision, never the values.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", c.Name),
		slog.String("kind", c.Kind),
		slog.Any("fields", c.Fields()),
		slog.Time("expires_at", c.ExpiresAt),
		slog.String("lease_id", c.LeaseID),
		slog.String("decision_id", c.DecisionID),
	)
}

// MarshalJSON writes c in the socket API's shape with every value
// replaced by "[redacted]". Code that delivers a credential as JSON builds
// its document from Data explicitly.
func (c Credential) MarshalJSON() ([]byte, error) {
	w := wire{Name: c.Name, Kind: c.Kind, Data: make(map[string]string, len(c.Data)), ExpiresAt: c.ExpiresAt,
		LeaseID: c.LeaseID, DecisionID: c.DecisionID}
	for k := range c.Data {
		w.Data[k] = redacted
	}
	return json.Marshal(w)
}

// wire is the socket API's success body.
type wire struct {
	Name       string            `json:"name"`
	Kind       string            `json:"kind"`
	Data       map[string]string `json:"data"`
	ExpiresAt  time.Time         `json:"expires_at"`
	LeaseID    string            `json:"lease_id"`
	DecisionID string            `json:"decision_id"`
}

// errorBody is the socket API's refusal body.
type errorBody struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		DecisionID string `json:"decision_id"`
	} `json:"error"`
}

// parseReply decodes the broker's reply with the given status: a
// credential on 200, else an *Error. Errors never quote the body, which may
// hold secrets.
func parseReply(status int, body []byte) (*Credential, error) {
	if status != http.StatusOK {
		return nil, parseRefusal(status, body)
	}
	var w wire
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("credbroker: malformed reply (%d bytes): %s", len(body), describeJSONError(err))
	}
	switch {
	case w.Name == "":
		return nil, fmt.Errorf("credbroker: malformed reply: no credential name")
	case w.ExpiresAt.IsZero():
		return nil, fmt.Errorf("credbroker: malformed reply for %q: no expiry", w.Name)
	case w.Data == nil:
		return nil, fmt.Errorf("credbroker: malformed reply for %q: no data", w.Name)
	}
	return &Credential{Name: w.Name, Kind: w.Kind, Data: w.Data, ExpiresAt: w.ExpiresAt, LeaseID: w.LeaseID, DecisionID: w.DecisionID}, nil
}

// parseRefusal decodes a refusal; a body that is not the JSON error shape
// still gives an *Error, coded by its status.
func parseRefusal(status int, body []byte) *Error {
	e := &Error{Status: status}
	var eb errorBody
	if json.Unmarshal(body, &eb) == nil {
		e.Code, e.Message, e.DecisionID = cleanMessage(eb.Error.Code), cleanMessage(eb.Error.Message), cleanMessage(eb.Error.DecisionID)
	}
	if e.Code == "" {
		e.Code = codeOf(status)
	}
	if e.Message == "" {
		e.Message = "the broker answered " + strings.TrimSpace(fmt.Sprintf("%d %s", status, http.StatusText(status)))
	}
	return e
}

// describeJSONError names where and how a reply failed to decode, never the
// bytes themselves.
func describeJSONError(err error) string {
	switch e := err.(type) {
	case *json.SyntaxError:
		return fmt.Sprintf("syntax error at byte %d", e.Offset)
	case *json.UnmarshalTypeError:
		return fmt.Sprintf("field %q has the wrong type", e.Field)
	}
	return "not a JSON object"
}
