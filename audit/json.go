package audit

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// recordJSON is the JSON form of a Record, one object per line in
// `audit query --format json` and `audit export`.
type recordJSON struct {
	Seq           int64           `json:"seq"`
	Kind          string          `json:"kind,omitempty"`
	Time          time.Time       `json:"time"`
	DecisionID    string          `json:"decision_id,omitempty"`
	Decision      string          `json:"decision,omitempty"`
	Reason        string          `json:"reason,omitempty"`
	Policy        string          `json:"policy,omitempty"`
	PolicyVersion string          `json:"policy_version,omitempty"`     // the deciding policy's
	SetVersion    string          `json:"policy_set_version,omitempty"` // the policy set's, for a default deny
	Attestor      string          `json:"attestor,omitempty"`
	Subject       string          `json:"subject,omitempty"`
	Claims        map[string]any  `json:"claims,omitempty"`
	PeerPID       int64           `json:"peer_pid"`
	PeerUID       int64           `json:"peer_uid"`
	Credential    string          `json:"credential,omitempty"`
	Provider      string          `json:"provider,omitempty"`
	Channel       string          `json:"channel,omitempty"`
	TargetHost    string          `json:"target_host,omitempty"`
	Database      string          `json:"database,omitempty"`
	UpstreamUser  string          `json:"upstream_user,omitempty"`
	Method        string          `json:"method,omitempty"`
	Path          string          `json:"path,omitempty"`
	LeaseID       string          `json:"lease_id,omitempty"`
	ExpiresAt     time.Time       `json:"expires_at,omitzero"`
	Fingerprint   string          `json:"fingerprint,omitempty"`
	LatencyMS     float64         `json:"latency_ms"`
	Input         json.RawMessage `json:"input,omitempty"`
	PrevHash      string          `json:"prev_hash,omitempty"`
	Hash          string          `json:"hash,omitempty"`
	Install       string          `json:"install,omitempty"`
	Host          string          `json:"host,omitempty"`
}

// MarshalJSON encodes r with snake_case field names, times in RFC 3339 with
// nanoseconds, and the latency as fractional milliseconds (latency_ms).
// Empty strings, empty claims, no input and a zero expiry are omitted.
// The stored PolicyVersion is written as policy_version when a policy
// decided and as policy_set_version for a default deny (see
// DecidingPolicyVersion and PolicySetVersion).
func (r Record) MarshalJSON() ([]byte, error) {
	w := recordJSON{
		Seq: r.Seq, Kind: r.Kind, Time: r.Time, DecisionID: r.DecisionID, Decision: r.Decision,
		Reason: r.Reason, Policy: r.Policy, PolicyVersion: r.DecidingPolicyVersion(),
		SetVersion: r.PolicySetVersion(), Attestor: r.Attestor,
		Subject: r.Subject, Claims: r.Claims, PeerPID: r.PeerPID, PeerUID: r.PeerUID,
		Credential: r.Credential, Provider: r.Provider, Channel: r.Channel, TargetHost: r.TargetHost,
		Database: r.Database, UpstreamUser: r.UpstreamUser, Method: r.Method, Path: r.Path,
		LeaseID: r.LeaseID, ExpiresAt: r.ExpiresAt,
		Fingerprint: r.Fingerprint, LatencyMS: latencyMS(r.Latency),
		Input: r.Input, PrevHash: r.PrevHash, Hash: r.Hash, Install: r.Install, Host: r.Host,
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes the form MarshalJSON writes. Claim numbers decode as
// json.Number; an absent peer_uid means unknown (-1). policy_version or,
// without it, policy_set_version becomes PolicyVersion, so that lines
// written before the two were told apart (policy_version for both) read
// the same.
func (r *Record) UnmarshalJSON(data []byte) error {
	w := recordJSON{PeerUID: -1}
	if err := decodeJSON(data, &w); err != nil {
		return fmt.Errorf("audit: record: %w", err)
	}
	ns := math.Round(w.LatencyMS * float64(time.Millisecond))
	if ns < math.MinInt64 || ns >= math.MaxInt64 {
		return fmt.Errorf("audit: record: latency_ms %g out of range", w.LatencyMS)
	}
	*r = Record{
		Seq: w.Seq, Kind: w.Kind, Time: w.Time, DecisionID: w.DecisionID, Decision: w.Decision,
		Reason: w.Reason, Policy: w.Policy, PolicyVersion: cmpOr(w.PolicyVersion, w.SetVersion), Attestor: w.Attestor,
		Subject: w.Subject, Claims: w.Claims, PeerPID: w.PeerPID, PeerUID: w.PeerUID,
		Credential: w.Credential, Provider: w.Provider, Channel: w.Channel, TargetHost: w.TargetHost,
		Database: w.Database, UpstreamUser: w.UpstreamUser, Method: w.Method, Path: w.Path,
		LeaseID: w.LeaseID, ExpiresAt: w.ExpiresAt,
		Fingerprint: w.Fingerprint, Latency: time.Duration(ns), Input: w.Input,
		PrevHash: w.PrevHash, Hash: w.Hash, Install: w.Install, Host: w.Host,
	}
	return nil
}
