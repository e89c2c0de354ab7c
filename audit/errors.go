package audit

import "errors"

// Sentinel errors for callers to branch on with errors.Is. Every error this
// package returns starts with "audit:"; wrapped causes follow.
var (
	// ErrUnavailable means the store cannot be written: a commit failed (disk
	// full, read-only file system, I/O error, lock held past BusyTimeout),
	// the writer is not running, or the Log is closed. The record was not
	// committed, so the decision it describes must not be acted on.
	ErrUnavailable = errors.New("audit: store unavailable")

	// ErrInvalidRecord means Append refused a record before queueing it: an
	// unknown decision, a missing decision id, a time outside the years
	// 1678–2262, or claims or input that are not a JSON object.
	ErrInvalidRecord = errors.New("audit: invalid record")

	// ErrTampered means Verify found that the log, its prune anchor or a
	// checkpoint does not verify. The error is a *Failure naming the row.
	ErrTampered = errors.New("audit: log does not verify")

	// ErrRewound means Open refused a log that ends before, or no longer
	// holds, the newest chain head this install signed: its newest rows were
	// removed or rewritten, or the record of the signed head is gone.
	// Config.AcceptRewind overrides it, on the record.
	ErrRewound = errors.New("audit: the log does not reach the head this install signed")
)
