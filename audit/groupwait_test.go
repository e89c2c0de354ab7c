package audit

import (
	"context"
	"testing"
	"time"
)

// TestExpectHoldsCommitForAnnouncedRecords: while a second record is
// announced, the first one's commit waits for it, and both share a
// transaction (consecutive seqs, committed together).
func TestExpectHoldsCommitForAnnouncedRecords(t *testing.T) {
	l := startLog(t, Config{GroupWait: time.Hour})
	now := time.Now()
	doneA, doneB := l.Expect(), l.Expect()
	defer doneA()
	defer doneB()

	first := make(chan error, 1)
	a := testRecord(1, now)
	go func() { first <- l.Append(context.Background(), a) }()
	// Give a wrong writer time to commit the first record alone. On a slow
	// machine the first Append may not even be queued yet; then the second
	// one waits for it instead, which the check below accepts.
	select {
	case err := <-first:
		t.Fatalf("first record committed (%v) while a second was announced", err)
	case <-time.After(200 * time.Millisecond):
	}
	b := testRecord(2, now)
	if err := l.Append(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if b.Seq != a.Seq+1 && a.Seq != b.Seq+1 {
		t.Fatalf("seqs %d and %d, want consecutive", a.Seq, b.Seq)
	}
}

// TestLoneAppendDoesNotWait: nothing announced, no waiting, however long
// GroupWait is.
func TestLoneAppendDoesNotWait(t *testing.T) {
	l := startLog(t, Config{GroupWait: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := l.Expect() // the caller's own announcement
	defer done()
	if err := l.Append(ctx, testRecord(1, time.Now())); err != nil {
		t.Fatalf("a lone announced append waited: %v", err)
	}
	done()
	if err := l.Append(ctx, testRecord(2, time.Now())); err != nil {
		t.Fatalf("an unannounced append waited: %v", err)
	}
}

// TestAnnouncementsNeverHoldBeyondGroupWait: records announced but never
// appended hold a commit only for GroupWait; withdrawn ones not at all.
func TestAnnouncementsNeverHoldBeyondGroupWait(t *testing.T) {
	l := startLog(t, Config{GroupWait: 20 * time.Millisecond})
	stuck := l.Expect() // a decision that never appends
	defer stuck()
	gone := l.Expect()
	gone()
	gone() // a second call is harmless
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.Append(ctx, testRecord(1, time.Now())); err != nil {
		t.Fatalf("append held by an announcement that never came: %v", err)
	}
	if got := l.expected.Load(); got != 1 {
		t.Fatalf("expected = %d, want 1 (the stuck one)", got)
	}
}
