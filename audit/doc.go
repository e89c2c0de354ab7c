// Package audit is credbroker's tamper-evident decision log: one SQLite row
// per decision, committed before any credential is delivered, chained by
// hashes so that editing, deleting, inserting or reordering rows is
// detected, and anchored by signed checkpoints so that cutting off the
// newest rows is detected too.
//
// # Writing
//
// Open a Log, run its writer, and Append one Record per decision:
//
//	l, err := audit.Open(ctx, audit.Config{Path: "/var/lib/credbroker/audit.db", Logger: logger})
//	go l.Run(ctx)
//	defer l.Close()
//	err = l.Append(ctx, &audit.Record{DecisionID: id, Decision: audit.DecisionAllow, …})
//
// Append returns only once the row is committed (WAL, synchronous=FULL):
// concurrent Appends share one transaction (group commit), so durability
// costs one fsync per batch, not per row. If the row cannot be committed —
// read-only or full file system, I/O error, a lock held past BusyTimeout,
// the writer stopped — Append returns an error wrapping ErrUnavailable, the
// chain does not advance, and the caller must fail closed. The writer
// retries with the next batch, reopening the database when needed, so
// service resumes without a restart once the store recovers; Healthy
// reports the state. One Log may write a database at a time.
//
// A Record never holds a secret: Fingerprint gives an HMAC-SHA256 of the
// issued secret under a per-install key kept in the key file (Path+".key",
// mode 0600), which also holds the Ed25519 key that signs checkpoints and
// prune anchors.
//
// # The chain
//
// Row n stores prev_hash, the hash of row n-1 (64 zeros for row 1), and
// hash = SHA-256 of a domain tag, n, the previous hash and every field in a
// length-prefixed encoding; claims and input are stored as canonical JSON
// (sorted keys, no white space). Seq is stored explicitly, so a missing or
// moved row shows. A chain alone cannot show that its newest rows were cut
// off: Run therefore writes a signed Checkpoint of the head (seq, hash,
// time) to Config.Checkpoint.File every interval and at shutdown, for
// shipping off the host, and Verify checks the log still reaches it.
//
// # Reading
//
// Query, Export and Verify open the database read-only and work on a live
// log (WAL lets readers run beside the writer). Verify names the first row
// that fails as a *Failure wrapping ErrTampered. Prune deletes old rows in
// short transactions and leaves a signed Anchor so that the retained chain
// still verifies.
package audit
