package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// Decision values of Record.Decision.
const (
	DecisionAllow = "allow"
	DecisionDeny  = "deny"
	DecisionError = "error"
)

// Record is one row of the log. Most rows are decisions: what was asked, by
// whom, what was decided and why, and what was issued. Append fills Seq,
// PrevHash and Hash, and Time when it is zero; everything else is the
// caller's. A Record never holds a secret: Fingerprint is an HMAC of the
// issued secret (see Log.Fingerprint).
//
// Rows of other kinds are events the Log writes itself (see the Kind
// constants): their Reason says what happened and Input holds the details
// as a JSON object; the decision fields are empty.
type Record struct {
	Seq           int64           // chain position (1, 2, 3, …), assigned by Append
	Kind          string          // KindDecision (the default: "" reads as a decision) or an event kind
	Time          time.Time       // decision time (stored as UTC with ns precision)
	DecisionID    string          // unique id of the decision, required
	Decision      string          // DecisionAllow, DecisionDeny or DecisionError
	Reason        string          // why, in words
	Policy        string          // deciding policy name, "" for default deny / errors
	PolicyVersion string          // column policy_version: the deciding policy's version hash, or the policy set's for a default deny, "" before evaluation (DecidingPolicyVersion, PolicySetVersion tell them apart)
	Attestor      string          // identity method: unix, kubernetes, …
	Subject       string          // workload subject, e.g. "unix:uid:1000"
	Claims        map[string]any  // selected identity claims (JSON-compatible values)
	PeerPID       int64           // 0 when unknown
	PeerUID       int64           // -1 when unknown
	Credential    string          // credential name
	Provider      string          // provider kind, e.g. "static"
	Channel       string          // socket | http | postgres | mysql | redis | aws
	TargetHost    string          // upstream host where known
	Database      string          // database the client asked for (database listeners)
	UpstreamUser  string          // user the broker logged in upstream as (database listeners); never a secret
	Method        string          // request method where known
	Path          string          // request path where known
	LeaseID       string          // lease of the issued credential
	ExpiresAt     time.Time       // zero when nothing was issued
	Fingerprint   string          // HMAC-SHA256 of the issued secret, never the secret
	Latency       time.Duration   // time taken to decide and issue
	Input         json.RawMessage // the policy input the decision was made on (a JSON object)
	PrevHash      string          // hex SHA-256 of the previous row (64 zeros for the first)
	Hash          string          // hex SHA-256 of this row

	// Install and Host say which broker wrote the row; only a fleet store
	// fills them (a single log is one install). They are not part of the
	// row's hash: the install id is the fingerprint of the install's
	// checkpoint key, recorded outside its chain.
	Install string
	Host    string
}

// row is a Record in its stored form: the columns of one decisions row. The
// hash of a row is computed from these values, so that Verify recomputes it
// from exactly what is stored.
type row struct {
	seq           int64
	kind          string // KindDecision or an event kind
	time          int64  // Unix ns
	decisionID    string
	decision      string
	reason        string
	policy        string
	policyVersion string
	attestor      string
	subject       string
	claims        string // canonical JSON object, "" when there are none
	peerPID       int64
	peerUID       int64
	credential    string
	provider      string
	channel       string
	targetHost    string
	method        string
	path          string
	leaseID       string
	expiresAt     int64 // Unix ns, valid when hasExpiry
	hasExpiry     bool
	fingerprint   string
	latency       int64  // ns
	input         string // canonical JSON object, "" when there is none
	prevHash      string
	hash          string
	database      string // schema 4 on; "" in older rows
	upstreamUser  string // schema 4 on; "" in older rows
}

// columns lists the decisions columns in row order: those of schema 1
// (columnsV1), then kind (schema 2), database and upstream_user (schema 4).
const columns = columnsV1 + ", kind, database, upstream_user"

// columnsV1 lists the columns schema 1 has.
const columnsV1 = "seq, time, decision_id, decision, reason, policy, policy_version, attestor, subject, claims, " +
	"peer_pid, peer_uid, credential, provider, channel, target_host, method, path, lease_id, expires_at, " +
	"fingerprint, latency_ns, input, prev_hash, hash"

// numColumns is the number of entries in columns.
const numColumns = 28

// Times outside what int64 nanoseconds since 1970 can hold.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// newRow validates r and converts it to its stored form, without seq and
// hashes, which the writer assigns.
func newRow(r *Record) (*row, error) {
	if r.Kind != "" && r.Kind != KindDecision {
		return nil, fmt.Errorf("%w: kind %q: Append records decisions only", ErrInvalidRecord, r.Kind)
	}
	switch r.Decision {
	case DecisionAllow, DecisionDeny, DecisionError:
	default:
		return nil, fmt.Errorf("%w: decision %q is not allow, deny or error", ErrInvalidRecord, r.Decision)
	}
	if r.DecisionID == "" {
		return nil, fmt.Errorf("%w: decision id is empty", ErrInvalidRecord)
	}
	t, err := unixNano("time", r.Time)
	if err != nil {
		return nil, err
	}
	claims, err := canonicalClaims(r.Claims)
	if err != nil {
		return nil, err
	}
	input, err := canonicalObject(r.Input)
	if err != nil {
		return nil, fmt.Errorf("%w: input: %w", ErrInvalidRecord, err)
	}
	rw := &row{
		kind: KindDecision, time: t, decisionID: r.DecisionID, decision: r.Decision, reason: r.Reason,
		policy: r.Policy, policyVersion: r.PolicyVersion, attestor: r.Attestor, subject: r.Subject,
		claims: claims, peerPID: r.PeerPID, peerUID: r.PeerUID, credential: r.Credential,
		provider: r.Provider, channel: r.Channel, targetHost: r.TargetHost, method: r.Method,
		path: r.Path, leaseID: r.LeaseID, fingerprint: r.Fingerprint, latency: int64(r.Latency),
		input: input, database: r.Database, upstreamUser: r.UpstreamUser,
	}
	if !r.ExpiresAt.IsZero() {
		if rw.expiresAt, err = unixNano("expires_at", r.ExpiresAt); err != nil {
			return nil, err
		}
		rw.hasExpiry = true
	}
	return rw, nil
}

// unixNano converts a non-zero time to Unix nanoseconds, refusing times int64
// cannot hold.
func unixNano(field string, t time.Time) (int64, error) {
	if t.IsZero() || t.Before(minTime) || t.After(maxTime) {
		return 0, fmt.Errorf("%w: %s %s is outside 1678–2262", ErrInvalidRecord, field, t)
	}
	return t.UnixNano(), nil
}

// canonicalClaims encodes claims as a canonical JSON object, "" when empty.
func canonicalClaims(claims map[string]any) (string, error) {
	if len(claims) == 0 {
		return "", nil
	}
	if s, ok := encodeFlat(claims); ok {
		return s, nil
	}
	raw, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("%w: claims: %w", ErrInvalidRecord, err)
	}
	s, err := canonicalObject(raw)
	if err != nil {
		return "", fmt.Errorf("%w: claims: %w", ErrInvalidRecord, err)
	}
	return s, nil
}

// record converts a stored row back to a Record.
func (rw *row) record() (*Record, error) {
	r := &Record{
		Seq: rw.seq, Kind: rw.kind, Time: time.Unix(0, rw.time).UTC(), DecisionID: rw.decisionID,
		Decision: rw.decision, Reason: rw.reason, Policy: rw.policy, PolicyVersion: rw.policyVersion,
		Attestor: rw.attestor, Subject: rw.subject, PeerPID: rw.peerPID, PeerUID: rw.peerUID,
		Credential: rw.credential, Provider: rw.provider, Channel: rw.channel,
		TargetHost: rw.targetHost, Method: rw.method, Path: rw.path, LeaseID: rw.leaseID,
		Fingerprint: rw.fingerprint, Latency: time.Duration(rw.latency), PrevHash: rw.prevHash,
		Hash: rw.hash, Database: rw.database, UpstreamUser: rw.upstreamUser,
	}
	if rw.hasExpiry {
		r.ExpiresAt = time.Unix(0, rw.expiresAt).UTC()
	}
	if rw.claims != "" {
		var err error
		if r.Claims, err = decodeObject(rw.claims); err != nil {
			return nil, fmt.Errorf("audit: seq %d: claims: %w", rw.seq, err)
		}
	}
	if rw.input != "" {
		r.Input = json.RawMessage(rw.input)
	}
	return r, nil
}

// decodeJSON decodes data into v keeping numbers as json.Number, so that
// large integers such as GitHub ids survive a round trip.
func decodeJSON(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	return d.Decode(v)
}

// rowDomain separates decision row hashes from every other use of
// SHA-256; eventDomain does the same for the rows of every other kind, whose
// hash also covers the kind. A decision's hash is the same in schema 1 and
// 2, so rows written before the kind column existed still verify.
//
// The database and upstream_user columns (schema 4) follow the same rule: a
// row whose two are both empty — every row written before schema 4, and
// every row of a channel without them — hashes exactly as it did, so old
// databases and their checkpoints still verify. A row with either set ends
// with databaseMarker and then both, length-prefixed. No two rows share an
// encoding: every field before them is fixed-size or length-prefixed, so an
// encoding reads back one way from the domain on, and the older form ends
// where the marker would begin.
const (
	rowDomain      = "credbroker audit row v1\x00"
	eventDomain    = "credbroker audit event v1\x00"
	databaseMarker = "database upstream_user v1\x00"
)

// hasher computes row hashes, reusing one buffer.
type hasher struct {
	buf []byte
}

// sum returns the hash of rw at seq after prev: SHA-256 over the domain, seq,
// prev and every field, strings length-prefixed, so that no two different
// rows share an encoding (database and upstream_user only when one is set,
// see rowDomain).
func (h *hasher) sum(seq int64, prev *[sha256.Size]byte, rw *row) [sha256.Size]byte {
	domain := rowDomain
	if rw.kind != KindDecision {
		domain = eventDomain
	}
	b := append(h.buf[:0], domain...)
	b = binary.BigEndian.AppendUint64(b, uint64(seq))
	b = append(b, prev[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(rw.time))
	for _, s := range [...]string{rw.decisionID, rw.decision, rw.reason, rw.policy, rw.policyVersion,
		rw.attestor, rw.subject, rw.claims} {
		b = appendString(b, s)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(rw.peerPID))
	b = binary.BigEndian.AppendUint64(b, uint64(rw.peerUID))
	for _, s := range [...]string{rw.credential, rw.provider, rw.channel, rw.targetHost, rw.method,
		rw.path, rw.leaseID} {
		b = appendString(b, s)
	}
	if rw.hasExpiry {
		b = append(b, 1)
		b = binary.BigEndian.AppendUint64(b, uint64(rw.expiresAt))
	} else {
		b = append(b, 0)
	}
	b = appendString(b, rw.fingerprint)
	b = binary.BigEndian.AppendUint64(b, uint64(rw.latency))
	b = appendString(b, rw.input)
	if rw.kind != KindDecision {
		b = appendString(b, rw.kind)
	}
	if rw.database != "" || rw.upstreamUser != "" {
		b = append(b, databaseMarker...)
		b = appendString(b, rw.database)
		b = appendString(b, rw.upstreamUser)
	}
	h.buf = b
	return sha256.Sum256(b)
}

// appendString appends s with its length in front.
func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// clampUnixNano converts t to Unix ns, saturating outside what int64 holds;
// the zero time is the minimum.
func clampUnixNano(t time.Time) int64 {
	switch {
	case t.IsZero() || t.Before(minTime):
		return minTime.UnixNano()
	case t.After(maxTime):
		return maxTime.UnixNano()
	}
	return t.UnixNano()
}
