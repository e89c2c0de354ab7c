package audit

import (
	"database/sql/driver"
	"fmt"
)

// args fills dst with rw's column values in columns order, as the
// parameters numbered from first on.
func (rw *row) args(dst []driver.NamedValue, first int) {
	var expires any
	if rw.hasExpiry {
		expires = rw.expiresAt
	}
	values := [numColumns]any{rw.seq, rw.time, rw.decisionID, rw.decision, rw.reason, rw.policy,
		rw.policyVersion, rw.attestor, rw.subject, rw.claims, rw.peerPID, rw.peerUID, rw.credential,
		rw.provider, rw.channel, rw.targetHost, rw.method, rw.path, rw.leaseID, expires,
		rw.fingerprint, rw.latency, rw.input, rw.prevHash, rw.hash, rw.kind, rw.database, rw.upstreamUser}
	for i, v := range values {
		dst[i] = driver.NamedValue{Ordinal: first + i, Value: v}
	}
}

// scan sets rw from one result row of columns. A value of the wrong type
// (possible only in a database edited by hand) is an error naming the column.
func (rw *row) scan(v []driver.Value) error {
	s := scanner{v: v}
	*rw = row{
		seq: s.int(0), time: s.int(1), decisionID: s.text(2), decision: s.text(3), reason: s.text(4),
		policy: s.text(5), policyVersion: s.text(6), attestor: s.text(7), subject: s.text(8),
		claims: s.text(9), peerPID: s.int(10), peerUID: s.int(11), credential: s.text(12),
		provider: s.text(13), channel: s.text(14), targetHost: s.text(15), method: s.text(16),
		path: s.text(17), leaseID: s.text(18), fingerprint: s.text(20), latency: s.int(21),
		input: s.text(22), prevHash: s.text(23), hash: s.text(24), kind: s.text(25),
		database: s.text(26), upstreamUser: s.text(27),
	}
	if v[19] != nil {
		rw.expiresAt, rw.hasExpiry = s.int(19), true
	}
	return s.err
}

// scanner converts driver values, remembering the first type mismatch.
type scanner struct {
	v   []driver.Value
	err error
}

// columnNames names the columns for error messages.
var columnNames = [numColumns]string{"seq", "time", "decision_id", "decision", "reason", "policy",
	"policy_version", "attestor", "subject", "claims", "peer_pid", "peer_uid", "credential",
	"provider", "channel", "target_host", "method", "path", "lease_id", "expires_at",
	"fingerprint", "latency_ns", "input", "prev_hash", "hash", "kind", "database", "upstream_user"}

func (s *scanner) int(i int) int64 {
	x, ok := s.v[i].(int64)
	if !ok {
		s.fail(i, "integer")
	}
	return x
}

func (s *scanner) text(i int) string {
	x, ok := s.v[i].(string)
	if !ok {
		s.fail(i, "text")
	}
	return x
}

func (s *scanner) fail(i int, want string) {
	if s.err == nil {
		s.err = fmt.Errorf("column %s holds %T, want %s", columnNames[i], s.v[i], want)
	}
}
