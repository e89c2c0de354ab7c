package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
)

// schemaVersion is the version of the schema this package writes and reads.
// Older databases are migrated forward when a Log opens them; readers refuse
// a version other than this one (run the broker, or Open, once to migrate).
const schemaVersion = 4

// Keys of the meta table.
const (
	metaSchemaVersion = "schema_version"
	metaPruneAnchor   = "prune_anchor"
	// metaPublicKey is the base64 Ed25519 public key of the key file the log
	// was created (or first migrated) with: a different key file is refused.
	metaPublicKey = "public_key"
	// metaProbe is the time of the writer's last probe of a failed store.
	metaProbe = "probe"
)

// migrations[i] upgrades the schema from version i to i+1.
var migrations = [schemaVersion]string{
	// 1: one row per decision, keyed by its chain position. Time is Unix ns.
	// decisions_time serves time windows (subject included so that a glob is
	// tested on the index, before the row is read); decisions_subject serves
	// exact subjects and glob prefixes.
	`CREATE TABLE decisions (
		seq            INTEGER PRIMARY KEY,
		time           INTEGER NOT NULL,
		decision_id    TEXT NOT NULL,
		decision       TEXT NOT NULL,
		reason         TEXT NOT NULL,
		policy         TEXT NOT NULL,
		policy_version TEXT NOT NULL,
		attestor       TEXT NOT NULL,
		subject        TEXT NOT NULL,
		claims         TEXT NOT NULL,
		peer_pid       INTEGER NOT NULL,
		peer_uid       INTEGER NOT NULL,
		credential     TEXT NOT NULL,
		provider       TEXT NOT NULL,
		channel        TEXT NOT NULL,
		target_host    TEXT NOT NULL,
		method         TEXT NOT NULL,
		path           TEXT NOT NULL,
		lease_id       TEXT NOT NULL,
		expires_at     INTEGER,
		fingerprint    TEXT NOT NULL,
		latency_ns     INTEGER NOT NULL,
		input          TEXT NOT NULL,
		prev_hash      TEXT NOT NULL,
		hash           TEXT NOT NULL
	) STRICT;
	CREATE INDEX decisions_time ON decisions (time, subject);
	CREATE INDEX decisions_subject ON decisions (subject, time);`,

	// 2: rows of other kinds than decisions in the same chain: signed chain
	// heads, records of commits that reported failure, operator overrides.
	// Existing rows are decisions; adding a column with a default rewrites
	// no row.
	`ALTER TABLE decisions ADD COLUMN kind TEXT NOT NULL DEFAULT 'decision';`,

	// 3: lease lifecycle rows (KindLease) join the decisions that issued
	// their leases: "what happened to this lease" is answered from an index
	// of lease ids, which only rows that name a lease enter.
	`CREATE INDEX decisions_lease ON decisions (lease_id, seq) WHERE lease_id != '';`,

	// 4: decisions of database listeners (postgres, mysql, redis) name the
	// database the client asked for and the user the broker logged in
	// upstream as. Existing rows have neither; adding columns with a
	// default rewrites no row, and an empty pair hashes as before.
	`ALTER TABLE decisions ADD COLUMN database TEXT NOT NULL DEFAULT '';
	ALTER TABLE decisions ADD COLUMN upstream_user TEXT NOT NULL DEFAULT '';`,
}

// migrate creates or upgrades the schema in one write transaction.
func migrate(c *conn) (err error) {
	if err := c.exec("BEGIN IMMEDIATE"); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			c.exec("ROLLBACK")
		}
	}()
	if err := c.exec(`CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT, WITHOUT ROWID`); err != nil {
		return err
	}
	v, err := readSchemaVersion(c)
	if err != nil {
		return err
	}
	if v > schemaVersion {
		return fmt.Errorf("schema version %d is newer than this program's %d", v, schemaVersion)
	}
	for ; v < schemaVersion; v++ {
		if err := c.exec(migrations[v]); err != nil {
			return fmt.Errorf("migrating to schema version %d: %w", v+1, err)
		}
	}
	if err := setMeta(c, metaSchemaVersion, strconv.Itoa(schemaVersion)); err != nil {
		return err
	}
	if err := c.exec("COMMIT"); err != nil {
		return err
	}
	c.version = schemaVersion
	return nil
}

// checkSchema makes sure a database opened for reading has one of this
// package's schemas, and notes which in c. Readers read every version they
// can (a read-only store cannot be migrated); only the writer migrates.
func checkSchema(c *conn) error {
	v, err := readSchemaVersion(c)
	if err != nil {
		return fmt.Errorf("not a credbroker audit database: %w", err)
	}
	if v < 1 || v > schemaVersion {
		return fmt.Errorf("schema version %d, this program reads versions 1 to %d", v, schemaVersion)
	}
	c.version = v
	return nil
}

// selectColumns is the column list to SELECT from c's decisions table, in
// columns order: schema 1 has no kind column, and every row is a decision;
// schemas before 4 have no database or upstream_user, and every row's are
// empty.
func (c *conn) selectColumns() string {
	switch c.version {
	case 1:
		return columnsV1 + ", '" + KindDecision + "', '', ''"
	case 2, 3:
		return columnsV1 + ", kind, '', ''"
	}
	return columns
}

// readSchemaVersion returns the stored schema version, 0 when none is stored.
func readSchemaVersion(c *conn) (int, error) {
	s, ok, err := getMeta(c, metaSchemaVersion)
	if err != nil || !ok {
		return 0, err
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("schema version %q: %w", s, err)
	}
	return v, nil
}

// getMeta reads one meta value; ok is false when the key is absent.
func getMeta(c *conn, key string) (value string, ok bool, err error) {
	v, ok, err := c.queryRow("SELECT value FROM meta WHERE key = ?", key)
	if err != nil || !ok {
		return "", false, err
	}
	s, isText := v[0].(string)
	if !isText {
		return "", false, fmt.Errorf("meta %s holds %T, want text", key, v[0])
	}
	return s, true, nil
}

// setMeta stores one meta value.
func setMeta(c *conn, key, value string) error {
	return c.exec("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", key, value)
}

// chainHead is the newest row of the chain: the one the next row links to.
type chainHead struct {
	seq  int64
	hash [sha256.Size]byte
}

// hashHex is the head's hash in its stored form.
func (h chainHead) hashHex() string {
	return hex.EncodeToString(h.hash[:])
}

// loadHead reads the chain head: the newest row, else the row before the
// prune anchor when every row was pruned, else the genesis (seq 0, zero
// hash). signed reports whether the newest row is a signed head.
func loadHead(c *conn) (head chainHead, signed bool, err error) {
	v, ok, err := c.queryRow("SELECT seq, hash, kind FROM decisions ORDER BY seq DESC LIMIT 1")
	if err != nil {
		return chainHead{}, false, err
	}
	if ok {
		seq, _ := v[0].(int64)
		s, _ := v[1].(string)
		kind, _ := v[2].(string)
		h, err := parseHash(s)
		if err != nil {
			return chainHead{}, false, fmt.Errorf("head row %d: %w", seq, err)
		}
		return chainHead{seq: seq, hash: h}, kind == KindSignedHead, nil
	}
	a, err := readAnchor(c)
	if err != nil || a == nil {
		return chainHead{}, false, err
	}
	h, err := parseHash(a.PrevHash)
	if err != nil {
		return chainHead{}, false, fmt.Errorf("prune anchor: %w", err)
	}
	return chainHead{seq: a.Seq - 1, hash: h}, false, nil
}

// parseHash decodes a hex SHA-256 hash.
func parseHash(s string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	if len(s) != hex.EncodedLen(sha256.Size) {
		return h, fmt.Errorf("hash %q is not 64 lowercase hex digits", s)
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil || hex.EncodeToString(h[:]) != s {
		return h, fmt.Errorf("hash %q is not 64 lowercase hex digits", s)
	}
	return h, nil
}
