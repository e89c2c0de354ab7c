package fleet

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/credbroker/credbroker/audit"
)

// rowColumns are the columns of audit_rows that hold a row as its log
// stores it, in the order of rowValues and scanRow.
var rowColumns = []string{"seq", "kind", "time_ns", "decision_id", "decision", "reason", "policy",
	"policy_version", "attestor", "subject", "claims", "peer_pid", "peer_uid", "credential", "provider",
	"channel", "target_host", "method", "path", "lease_id", "expires_ns", "fingerprint", "latency_ns",
	"input", "prev_hash", "hash", "database_name", "upstream_user"}

// textFields returns the text columns of r in a fixed order: bit i of the
// escaped column stands for field i. The order only ever grows at its end.
func textFields(r *audit.StoredRow) []*string {
	return []*string{&r.Kind, &r.DecisionID, &r.Decision, &r.Reason, &r.Policy, &r.PolicyVersion,
		&r.Attestor, &r.Subject, &r.Claims, &r.Credential, &r.Provider, &r.Channel, &r.TargetHost,
		&r.Method, &r.Path, &r.LeaseID, &r.Fingerprint, &r.Input, &r.PrevHash, &r.Hash, &r.Database,
		&r.UpstreamUser}
}

// Bits of the escaped column that filters test.
const (
	decisionIDBit = 1 << 1
	subjectBit    = 1 << 7
	credentialBit = 1 << 9
	policyBit     = 1 << 4
	leaseBit      = 1 << 15
	databaseBit   = 1 << 20
)

// storable reports whether PostgreSQL text can hold s: valid UTF-8 without
// NUL.
func storable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// escape replaces, in r, each text value PostgreSQL cannot hold with the
// standard base64 of its bytes, and returns the mask of those it replaced.
// Such values are rare — no attestor yields them — but a row must never
// stop forwarding, nor be changed: unescape restores it byte for byte, so
// that it hashes and reads back as the log has it.
//
// The subject is kept in subject_raw instead (returned as raw), and the
// subject column holds what SQLite's GLOB sees of it: the text before its
// first NUL (GLOB reads C strings), so that workload globs match in the
// store as they do in the log; a subject that is not valid UTF-8 even so
// is matched as its base64.
func escape(r *audit.StoredRow) (mask int64, raw string) {
	for i, p := range textFields(r) {
		if storable(*p) {
			continue
		}
		enc := base64.StdEncoding.EncodeToString([]byte(*p))
		mask |= 1 << i
		if p != &r.Subject {
			*p = enc
			continue
		}
		raw = enc
		view, _, _ := strings.Cut(r.Subject, "\x00")
		if !storable(view) {
			view = enc
		}
		r.Subject = view
	}
	return mask, raw
}

// unescape reverses escape.
func unescape(r *audit.StoredRow, mask int64, raw string) error {
	fields := textFields(r)
	if mask>>len(fields) != 0 || mask < 0 {
		return fmt.Errorf("seq %d: escaped mask %#x names unknown columns", r.Seq, mask)
	}
	for i, p := range fields {
		if mask&(1<<i) == 0 {
			continue
		}
		enc := *p
		if p == &r.Subject {
			enc = raw
		}
		b, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return fmt.Errorf("seq %d: column %d is marked escaped but is not base64", r.Seq, i)
		}
		*p = string(b)
	}
	return nil
}

// rowBatch holds rows to insert as one array per column (see insertRows).
type rowBatch struct {
	seq, timeNS, peerPID, peerUID, latency                                   []int64
	expires                                                                  []*int64
	kind, decisionID, decision, reason, policy, policyVersion, attestor      []string
	subject, claims, credential, provider, channel, targetHost, method, path []string
	leaseID, fingerprint, input, prevHash, hash, database, upstreamUser      []string
	escaped                                                                  []int64
	subjectRaw                                                               []string
}

// add appends r, escaped.
func (b *rowBatch) add(r audit.StoredRow) {
	mask, raw := escape(&r)
	b.seq = append(b.seq, r.Seq)
	b.kind = append(b.kind, r.Kind)
	b.timeNS = append(b.timeNS, r.Time)
	b.decisionID = append(b.decisionID, r.DecisionID)
	b.decision = append(b.decision, r.Decision)
	b.reason = append(b.reason, r.Reason)
	b.policy = append(b.policy, r.Policy)
	b.policyVersion = append(b.policyVersion, r.PolicyVersion)
	b.attestor = append(b.attestor, r.Attestor)
	b.subject = append(b.subject, r.Subject)
	b.claims = append(b.claims, r.Claims)
	b.peerPID = append(b.peerPID, r.PeerPID)
	b.peerUID = append(b.peerUID, r.PeerUID)
	b.credential = append(b.credential, r.Credential)
	b.provider = append(b.provider, r.Provider)
	b.channel = append(b.channel, r.Channel)
	b.targetHost = append(b.targetHost, r.TargetHost)
	b.method = append(b.method, r.Method)
	b.path = append(b.path, r.Path)
	b.leaseID = append(b.leaseID, r.LeaseID)
	var exp *int64
	if r.HasExpiry {
		exp = &r.ExpiresAt
	}
	b.expires = append(b.expires, exp)
	b.fingerprint = append(b.fingerprint, r.Fingerprint)
	b.latency = append(b.latency, r.Latency)
	b.input = append(b.input, r.Input)
	b.prevHash = append(b.prevHash, r.PrevHash)
	b.hash = append(b.hash, r.Hash)
	b.database = append(b.database, r.Database)
	b.upstreamUser = append(b.upstreamUser, r.UpstreamUser)
	b.escaped = append(b.escaped, mask)
	b.subjectRaw = append(b.subjectRaw, raw)
}

// len returns how many rows b holds.
func (b *rowBatch) len() int { return len(b.seq) }

// reset empties b, keeping its arrays.
func (b *rowBatch) reset() {
	*b = rowBatch{
		seq: b.seq[:0], timeNS: b.timeNS[:0], peerPID: b.peerPID[:0], peerUID: b.peerUID[:0],
		latency: b.latency[:0], expires: b.expires[:0], kind: b.kind[:0], decisionID: b.decisionID[:0],
		decision: b.decision[:0], reason: b.reason[:0], policy: b.policy[:0], policyVersion: b.policyVersion[:0],
		attestor: b.attestor[:0], subject: b.subject[:0], claims: b.claims[:0], credential: b.credential[:0],
		provider: b.provider[:0], channel: b.channel[:0], targetHost: b.targetHost[:0], method: b.method[:0],
		path: b.path[:0], leaseID: b.leaseID[:0], fingerprint: b.fingerprint[:0], input: b.input[:0],
		prevHash: b.prevHash[:0], hash: b.hash[:0], database: b.database[:0], upstreamUser: b.upstreamUser[:0],
		escaped: b.escaped[:0], subjectRaw: b.subjectRaw[:0],
	}
}

// insertRows inserts a batch of one install's rows given as one array per
// column ($3 on, in rowColumns order, then escaped and subject_raw), so that one statement
// serves every batch size; a row whose (install_id, seq) is stored already
// is skipped, which needs only the INSERT privilege (a conflict target
// would need SELECT too).
var insertRows = func() string {
	types := []string{"bigint", "text", "bigint", "text", "text", "text", "text", "text", "text", "text",
		"text", "bigint", "bigint", "text", "text", "text", "text", "text", "text", "text", "bigint", "text",
		"bigint", "text", "text", "text", "text", "text", "bigint", "text"}
	var params []string
	for i, t := range types {
		params = append(params, fmt.Sprintf("$%d::%s[]", i+3, t))
	}
	return "INSERT INTO " + tableRows + " (install_id, host, " + strings.Join(rowColumns, ", ") + ", escaped, subject_raw) " +
		"SELECT $1::text, $2::text, u.* FROM unnest(" + strings.Join(params, ", ") + ") AS u " +
		"ON CONFLICT DO NOTHING"
}()

// args returns the parameters of insertRows.
func (b *rowBatch) args(install, host string) []any {
	return []any{install, host, b.seq, b.kind, b.timeNS, b.decisionID, b.decision, b.reason, b.policy,
		b.policyVersion, b.attestor, b.subject, b.claims, b.peerPID, b.peerUID, b.credential, b.provider,
		b.channel, b.targetHost, b.method, b.path, b.leaseID, b.expires, b.fingerprint, b.latency, b.input,
		b.prevHash, b.hash, b.database, b.upstreamUser, b.escaped, b.subjectRaw}
}

// selectRow is the column list scanRow reads.
var selectRow = "install_id, host, " + strings.Join(rowColumns, ", ") + ", escaped, subject_raw"

// scannedRow is one row of selectRow.
type scannedRow struct {
	install, host string
	row           audit.StoredRow
	expires       *int64
	escaped       int64
	subjectRaw    string
}

// dest returns the scan destinations of selectRow.
func (s *scannedRow) dest() []any {
	r := &s.row
	return []any{&s.install, &s.host, &r.Seq, &r.Kind, &r.Time, &r.DecisionID, &r.Decision, &r.Reason,
		&r.Policy, &r.PolicyVersion, &r.Attestor, &r.Subject, &r.Claims, &r.PeerPID, &r.PeerUID,
		&r.Credential, &r.Provider, &r.Channel, &r.TargetHost, &r.Method, &r.Path, &r.LeaseID, &s.expires,
		&r.Fingerprint, &r.Latency, &r.Input, &r.PrevHash, &r.Hash, &r.Database, &r.UpstreamUser, &s.escaped,
		&s.subjectRaw}
}

// finish completes a scanned row: the expiry, and unescaped text.
func (s *scannedRow) finish() error {
	s.row.HasExpiry, s.row.ExpiresAt = s.expires != nil, 0
	if s.expires != nil {
		s.row.ExpiresAt = *s.expires
	}
	if s.escaped != 0 {
		return unescape(&s.row, s.escaped, s.subjectRaw)
	}
	return nil
}

// checkpointBatch holds the checkpoints of a batch's signed heads.
type checkpointBatch struct {
	seq, signedNS   []int64
	hash, signature []string
}

// add appends cp.
func (b *checkpointBatch) add(cp *audit.Checkpoint) {
	b.seq = append(b.seq, cp.Seq)
	b.hash = append(b.hash, cp.Hash)
	b.signedNS = append(b.signedNS, cp.Time.UnixNano())
	b.signature = append(b.signature, hex.EncodeToString(cp.Signature))
}

func (b *checkpointBatch) len() int { return len(b.seq) }

func (b *checkpointBatch) reset() {
	b.seq, b.signedNS, b.hash, b.signature = b.seq[:0], b.signedNS[:0], b.hash[:0], b.signature[:0]
}

// args returns the parameters of insertCheckpoints.
func (b *checkpointBatch) args(install, host string) []any {
	return []any{install, host, b.seq, b.hash, b.signedNS, b.signature}
}

// insertCheckpoints inserts a batch's checkpoints; one already stored is
// skipped, a different one at the same seq is kept beside it.
const insertCheckpoints = "INSERT INTO " + tableCheckpoints + " (install_id, host, seq, hash, signed_ns, signature) " +
	"SELECT $1::text, $2::text, u.* FROM unnest($3::bigint[], $4::text[], $5::bigint[], $6::text[]) AS u " +
	"ON CONFLICT DO NOTHING"

// insertAnchor inserts a prune anchor.
const insertAnchor = "INSERT INTO " + tableAnchors + " (install_id, seq, anchor, signature, host) " +
	"VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"

// anchorJSON encodes a in the form audit.ParseAnchor reads.
func anchorJSON(a *audit.Anchor) (string, error) {
	b, err := json.Marshal(a)
	if err != nil {
		return "", fmt.Errorf("audit/fleet: prune anchor: %w", err)
	}
	return string(b), nil
}
