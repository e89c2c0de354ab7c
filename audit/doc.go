// Package audit is credbroker's tamper-evident decision log: one SQLite row
// per decision, committed before any credential is delivered, chained by
// hashes so that editing, deleting, inserting or reordering rows is
// detected; signed, every second, by the install's Ed25519 key in the log
// itself, so that a rewrite that recomputes every hash is detected by anyone
// holding the public key; and anchored by a head file and shipped
// checkpoints so that cutting off the newest rows is detected too.
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
// costs one fsync per batch, not per row. An Append that finds no commit
// under way commits on its own goroutine. If the row cannot be committed —
// read-only or full file system, I/O error, a lock held past BusyTimeout,
// the writer stopped — Append returns an error wrapping ErrUnavailable, the
// chain does not advance, and the caller must fail closed. The writer
// probes a failed store every ProbeInterval and reconnects when needed, so
// service resumes without a restart once the store recovers; Healthy
// reports the state. One Log may write a database at a time.
//
// The file that was opened is the file that is written: the database is
// created only by Open, and before every commit the writer checks that the
// database and WAL paths still name the files its connection holds. A file
// unlinked, renamed, replaced or unmounted makes every Append fail until
// the original is back. After a commit that reported failure, the
// reconnect compares the file's head with the writer's: rows SQLite
// committed all the same (possible after an fsync error) are named in a
// KindUndelivered row, so the log never shows as delivered a credential
// whose caller was refused.
//
// Leases issued by decisions have a lifecycle of their own — issue,
// refresh, renew, revoke, revoke failure — which the broker's lease manager
// records with RecordLease as KindLease rows in the same chain. Filter.Lease
// finds a lease's decision and lifecycle through an index of lease ids.
//
// A Record never holds a secret: Fingerprint gives an HMAC-SHA256 of the
// issued secret under a per-install key kept in the key file (Path+".key",
// mode 0600, created only with a new, empty log), which also holds the
// Ed25519 key that signs heads, checkpoints and prune anchors. The log
// stores its public key and refuses a key file that is not its own, or that
// group or others can read.
//
// # The chain
//
// Row n stores prev_hash, the hash of row n-1 (64 zeros for row 1), and
// hash = SHA-256 of a domain tag, n, the previous hash and every field in a
// length-prefixed encoding; claims and input are stored as canonical JSON
// (sorted keys, no white space). Seq is stored explicitly, so a missing or
// moved row shows. Fields added by later schemas (a database listener's
// database and upstream user) enter the hash only when set, so rows written
// before them keep their hashes. Anyone can recompute these hashes, so Run also signs the
// head into the log every SignInterval while rows are written, and at
// shutdown: a KindSignedHead row holds a Checkpoint (seq, hash, time,
// Ed25519 signature) of the row before it. Verify with the public key alone
// proves every row up to the newest signed head and reports the rows after
// it as not yet signed.
//
// A chain cannot show that its newest rows were cut off. The newest signed
// head is also kept in the head file beside the key file, and Open refuses
// a log that ends before it (ErrRewound) unless the operator accepts it
// (Config.AcceptRewind), which is recorded as a KindOverride row; no head is
// ever signed behind one signed before. The same signed head goes to
// Config.Checkpoint.File every interval, for shipping off the host, and
// Verify checks the log still reaches it.
//
// # Reading
//
// Query, Export and Verify open the database read-only and work on a live
// log (WAL lets readers run beside the writer). OpenFile's Reader is also a
// Follower: Follow gives the matching rows, then each new one as it is
// committed, woken by inotify. Counter counts any Reader's rows by
// workload, credential, policy, decision and more; NewTable, WriteDetail
// and WriteCounts print them for people, and CSV output escapes cells a
// spreadsheet would run as formulas (CSVText). Verify names the first row
// that fails as a *Failure wrapping ErrTampered. Prune deletes old rows in
// short transactions and leaves a signed Anchor so that the retained chain
// still verifies.
package audit
