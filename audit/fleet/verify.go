package fleet

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credbroker/credbroker/audit"
)

// VerifyOptions selects what Verify checks.
type VerifyOptions struct {
	// Install limits the check to one install; "" checks every install the
	// store holds rows, checkpoints or a key of.
	Install string
}

// InstallResult is what Verify found for one install.
type InstallResult struct {
	// Install is the install id (see InstallID).
	Install string
	// Hosts are the hosts its rows came from.
	Hosts []string
	// KeyProblem says why the install's public key could not be used: none
	// registered, or one whose fingerprint is not the install id. "" when
	// the key is the install's; signed heads and checkpoints are then
	// checked with it.
	KeyProblem string
	// Chain is the walk along the install's rows in the store, with the
	// checks `audit verify` makes of a log: hashes, links (no seq missing
	// except where a signed prune anchor accounts for it) and signed heads.
	Chain *audit.VerifyResult
	// Gaps are runs of rows the store lacks because the host pruned them
	// before they were forwarded, each bridged by the signed prune anchor the
	// host sent: not tampering, but rows the fleet cannot show.
	Gaps []Gap
	// Checkpoints counts the checkpoints (signed heads) received from the
	// install, every one ever sent.
	Checkpoints int64
	// Forks are checkpoints the install signed that the stored chain does
	// not reach: the store's row at their seq hashes differently, or the
	// store's rows end before it. The host's log was cut short or rewritten
	// after the fleet received its rows, and signed again (the store keeps
	// the rows it received first); or rows were deleted from the store.
	Forks []Fork
	// Forged counts checkpoints and prune anchors in the store whose
	// signature does not verify with the install's key: written by someone
	// else with the forwarding role's INSERT privilege. FirstForged
	// describes the first.
	Forged      int64
	FirstForged string
	// Unreachable counts checkpoints of rows pruned on the host before they
	// were forwarded, which the store cannot compare.
	Unreachable int64
	// Newest is the time of the install's newest row in the store.
	Newest time.Time
}

// Gap is a run of rows, From to To, pruned on the host before they were
// forwarded, and the signed prune anchor that accounts for them.
type Gap struct {
	From, To int64
	Anchor   *audit.Anchor
}

// Fork is a checkpoint, correctly signed by the install, that the stored
// chain does not reach.
type Fork struct {
	Checkpoint audit.Checkpoint
	Host       string    // the host that forwarded it
	Received   time.Time // when the store received it
	// StoredHash is the hash of the store's row at the checkpoint's seq, ""
	// when the store holds no such row.
	StoredHash string
	// StoredHead is the newest seq of the stored chain.
	StoredHead int64
}

// OK reports whether the install verifies: its key is its own, its chain
// verifies, and every checkpoint it signed is reached by the stored chain.
// Gaps do not fail it.
func (r *InstallResult) OK() bool {
	return r.KeyProblem == "" && r.Chain.Failure == nil && len(r.Forks) == 0 && r.Forged == 0
}

// String reports the result in one line, as `audit verify --fleet` prints
// it per install.
func (r *InstallResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "install %s", r.Install)
	if len(r.Hosts) > 0 {
		fmt.Fprintf(&b, " (%s %s)", plural(len(r.Hosts), "host"), strings.Join(r.Hosts, ", "))
	}
	if r.OK() {
		b.WriteString(": ok: ")
	} else {
		b.WriteString(": FAILED: ")
	}
	var parts []string
	if r.KeyProblem != "" {
		parts = append(parts, r.KeyProblem)
	}
	if n := len(r.Forks); n > 0 {
		parts = append(parts, fmt.Sprintf("%d %s signed by the install %s not reached by the stored chain — %s",
			n, plural(n, "checkpoint"), verb(n), r.Forks[0].describe()))
	}
	if r.Forged > 0 {
		parts = append(parts, fmt.Sprintf("%d forged %s (signature does not verify with the install's key), first %s",
			r.Forged, plural(int(r.Forged), "checkpoint or anchor"), r.FirstForged))
	}
	parts = append(parts, "chain: "+r.Chain.String())
	if r.Checkpoints > 0 && len(r.Forks) == 0 {
		parts = append(parts, fmt.Sprintf("%d %s received, every one reached by the stored chain", r.Checkpoints, plural(int(r.Checkpoints), "checkpoint")))
	}
	if r.Unreachable > 0 {
		parts = append(parts, fmt.Sprintf("%d %s of rows pruned before they were forwarded not compared", r.Unreachable, plural(int(r.Unreachable), "checkpoint")))
	}
	for _, g := range r.Gaps {
		forced := ""
		if g.Anchor.Forced {
			forced = ", forced below the retention floor"
		}
		parts = append(parts, fmt.Sprintf("rows %d to %d pruned on the host before they were forwarded (signed prune anchor at seq %d, pruned at %s%s)",
			g.From, g.To, g.Anchor.Seq, g.Anchor.PrunedAt.UTC().Format(time.RFC3339), forced))
	}
	if !r.Newest.IsZero() {
		parts = append(parts, "newest row "+r.Newest.UTC().Format(time.RFC3339))
	}
	b.WriteString(strings.Join(parts, "; "))
	return b.String()
}

// describe says what the fork shows.
func (f *Fork) describe() string {
	cp := &f.Checkpoint
	where := fmt.Sprintf("seq %d signed %s (received %s from %s) names hash %s", cp.Seq,
		cp.Time.UTC().Format(time.RFC3339), f.Received.UTC().Format(time.RFC3339), f.Host, cp.Hash)
	if f.StoredHash == "" {
		return where + fmt.Sprintf(", but the stored chain ends at seq %d: rows were deleted from the fleet store", f.StoredHead)
	}
	return where + fmt.Sprintf(", but the stored row %d hashes to %s: the host's log was cut short or rewritten after the fleet received it, and signed again (the store keeps the rows it received first)",
		cp.Seq, f.StoredHash)
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	if strings.HasSuffix(word, " or anchor") {
		return strings.TrimSuffix(word, " or anchor") + "s or anchors"
	}
	return word + "s"
}

func verb(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}

// Verify checks each install's rows, checkpoints and prune anchors in the
// store, and returns one result per install, in install id order. An error
// means Verify could not run; whether the installs verify is in the
// results (InstallResult.OK).
func (s *Store) Verify(ctx context.Context, opts VerifyOptions) ([]*InstallResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := []string{opts.Install}
	if opts.Install == "" {
		var err error
		if ids, err = s.installs(ctx); err != nil {
			return nil, s.scrub.err(fmt.Errorf("audit/fleet: verify: %w", err))
		}
	}
	var out []*InstallResult
	for _, id := range ids {
		r, err := s.verifyInstall(ctx, id)
		if err != nil {
			return nil, s.scrub.err(fmt.Errorf("audit/fleet: verify install %s: %w", id, err))
		}
		out = append(out, r)
	}
	return out, nil
}

// installs lists every install id the store knows: registered, or with
// rows or checkpoints. (A recursive CTE would walk the primary key faster,
// but Citus runs those on one shard only; Verify reads every row anyway.)
func (s *Store) installs(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	for _, t := range []string{tableInstalls, tableRows, tableCheckpoints} {
		err := collect(ctx, s.conn, "SELECT DISTINCT install_id FROM "+t, nil, func(rows pgx.Rows) error {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			seen[id] = true
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// verifyInstall checks one install.
func (s *Store) verifyInstall(ctx context.Context, id string) (*InstallResult, error) {
	res := &InstallResult{Install: id}
	pub, err := s.installKey(ctx, res)
	if err != nil {
		return nil, err
	}
	anchors, err := s.anchors(ctx, res, pub)
	if err != nil {
		return nil, err
	}
	check := audit.NewChainCheck(pub)
	hosts := map[string]bool{}
	var sr scannedRow
	var rowErr error
	first, added := int64(0), 0
	err = collect(ctx, s.conn, "SELECT "+selectRow+" FROM "+tableRows+" WHERE install_id = $1 ORDER BY seq", []any{id}, func(rows pgx.Rows) error {
		if err := rows.Scan(sr.dest()...); err != nil {
			return err
		}
		hosts[sr.host] = true
		if t := time.Unix(0, sr.row.Time); t.After(res.Newest) {
			res.Newest = t
		}
		if err := sr.finish(); err != nil {
			if rowErr == nil {
				rowErr = err
			}
			return nil
		}
		if first == 0 {
			first = sr.row.Seq
		}
		// Rows missing before this one are accounted for when the host sent
		// a signed prune anchor that this row follows: before the first row,
		// the stored chain starts there; later, it is a gap.
		if next := check.Next(); sr.row.Seq > next {
			if a := anchorFor(anchors, sr.row.Seq, sr.row.PrevHash); a != nil && check.Resume(a) == nil && added > 0 {
				res.Gaps = append(res.Gaps, Gap{From: next, To: sr.row.Seq - 1, Anchor: a})
			}
		}
		check.Add(&sr.row)
		added++
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.Chain = check.Result()
	if rowErr != nil && res.Chain.Failure == nil {
		res.Chain.Failure = &audit.Failure{Problem: audit.ProblemEdited, Detail: rowErr.Error()}
	}
	for h := range hosts {
		res.Hosts = append(res.Hosts, h)
	}
	slices.Sort(res.Hosts)
	if err := s.checkpoints(ctx, res, pub, anchors, first); err != nil {
		return nil, err
	}
	return res, nil
}

// installKey returns the install's registered public key when its
// fingerprint is the install id; otherwise it notes why in res and
// returns nil.
func (s *Store) installKey(ctx context.Context, res *InstallResult) (ed25519.PublicKey, error) {
	var keys []string
	err := collect(ctx, s.conn, "SELECT public_key FROM "+tableInstalls+" WHERE install_id = $1", []any{res.Install}, func(rows pgx.Rows) error {
		var k string
		if err := rows.Scan(&k); err != nil {
			return err
		}
		keys = append(keys, k)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		res.KeyProblem = "no public key registered for the install, so its signed heads and checkpoints cannot be checked"
		return nil, nil
	}
	raw, err := base64.StdEncoding.DecodeString(keys[0])
	if err != nil || len(raw) != ed25519.PublicKeySize {
		res.KeyProblem = "the registered public key is not a base64 Ed25519 key"
		return nil, nil
	}
	pub := ed25519.PublicKey(raw)
	if InstallID(pub) != res.Install {
		res.KeyProblem = "the registered public key's fingerprint is " + InstallID(pub) + ", not the install id: registered by someone else"
		return nil, nil
	}
	return pub, nil
}

// anchors returns the install's prune anchors whose signatures verify, by
// seq; others count as forged.
func (s *Store) anchors(ctx context.Context, res *InstallResult, pub ed25519.PublicKey) (map[int64][]*audit.Anchor, error) {
	out := map[int64][]*audit.Anchor{}
	err := collect(ctx, s.conn, "SELECT seq, anchor FROM "+tableAnchors+" WHERE install_id = $1 ORDER BY seq", []any{res.Install}, func(rows pgx.Rows) error {
		var seq int64
		var text string
		if err := rows.Scan(&seq, &text); err != nil {
			return err
		}
		a, err := audit.ParseAnchor([]byte(text))
		if err == nil && a.Seq != seq {
			err = fmt.Errorf("stored under seq %d", seq)
		}
		if err == nil && pub != nil {
			err = a.Verify(pub)
		}
		if err != nil {
			res.forged(fmt.Sprintf("prune anchor at seq %d: %v", seq, err))
			return nil
		}
		out[seq] = append(out[seq], a)
		return nil
	})
	return out, err
}

// forged counts a forged checkpoint or anchor.
func (r *InstallResult) forged(what string) {
	if r.Forged == 0 {
		r.FirstForged = what
	}
	r.Forged++
}

// anchorFor returns an anchor at seq linking to prevHash, or nil.
func anchorFor(anchors map[int64][]*audit.Anchor, seq int64, prevHash string) *audit.Anchor {
	for _, a := range anchors[seq] {
		if a.PrevHash == prevHash {
			return a
		}
	}
	return nil
}

// checkpoints counts the install's checkpoints and checks those whose seq
// the stored chain does not hold with their hash: each is a fork when
// correctly signed and forged otherwise, unless it names a row pruned
// before it was forwarded (first is the oldest stored row's seq).
func (s *Store) checkpoints(ctx context.Context, res *InstallResult, pub ed25519.PublicKey, anchors map[int64][]*audit.Anchor, first int64) error {
	if err := s.conn.QueryRow(ctx, "SELECT count(*) FROM "+tableCheckpoints+" WHERE install_id = $1", res.Install).Scan(&res.Checkpoints); err != nil {
		return err
	}
	q := `SELECT c.seq, c.hash, c.signed_ns, c.signature, c.host, c.received_at, r.hash
		FROM ` + tableCheckpoints + ` c LEFT JOIN ` + tableRows + ` r ON r.install_id = c.install_id AND r.seq = c.seq
		WHERE c.install_id = $1 AND (r.hash IS NULL OR r.hash <> c.hash)
		ORDER BY c.seq, c.signed_ns`
	return collect(ctx, s.conn, q, []any{res.Install}, func(rows pgx.Rows) error {
		var f Fork
		var signedNS int64
		var sig string
		var stored *string
		if err := rows.Scan(&f.Checkpoint.Seq, &f.Checkpoint.Hash, &signedNS, &sig, &f.Host, &f.Received, &stored); err != nil {
			return err
		}
		cp := &f.Checkpoint
		cp.Time = time.Unix(0, signedNS).UTC()
		cp.PublicKey = pub
		cp.Signature, _ = hex.DecodeString(sig)
		if pub == nil {
			return nil // KeyProblem already fails the install
		}
		if err := cp.Verify(pub); err != nil {
			res.forged(fmt.Sprintf("checkpoint at seq %d received from %s", cp.Seq, f.Host))
			return nil
		}
		if stored != nil {
			f.StoredHash = *stored
			res.Forks = append(res.Forks, f)
			return nil
		}
		// No stored row at its seq: the row after it may have been the
		// first kept by a prune anchor, or it lies in a gap or before the
		// stored chain.
		for _, a := range anchors[cp.Seq+1] {
			if a.PrevHash == cp.Hash {
				res.Unreachable++
				return nil
			}
		}
		pruned := cp.Seq < first
		for _, g := range res.Gaps {
			pruned = pruned || g.From <= cp.Seq && cp.Seq <= g.To
		}
		if pruned {
			res.Unreachable++
			return nil
		}
		f.StoredHead = res.Chain.HeadSeq
		res.Forks = append(res.Forks, f)
		return nil
	})
}
