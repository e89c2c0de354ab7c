package audit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/credbroker/credbroker/audit"
)

// Example records one decision, then reads the log back as `credbroker
// audit verify` and `audit query` do.
func Example() {
	dir, err := os.MkdirTemp("", "audit-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "audit.db")

	ctx, cancel := context.WithCancel(context.Background())
	l, err := audit.Open(ctx, audit.Config{Path: path})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()

	r := &audit.Record{
		Time:        time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		DecisionID:  "3f9c2a",
		Decision:    audit.DecisionAllow,
		Reason:      "allowed by payments-can-charge",
		Policy:      "payments-can-charge",
		Attestor:    "unix",
		Subject:     "unix:uid:1000",
		Claims:      map[string]any{"uid": 1000, "exe": "/usr/bin/app"},
		PeerPID:     4242,
		PeerUID:     1000,
		Credential:  "demo",
		Provider:    "static",
		Channel:     "socket",
		Fingerprint: l.Fingerprint([]byte("the issued secret")),
		Input:       json.RawMessage(`{"identity":{"subject":"unix:uid:1000"},"credential":"demo"}`),
	}
	if err := l.Append(ctx, r); err != nil { // committed once this returns nil
		log.Fatal(err) // fail closed: do not hand out the credential
	}
	fmt.Println("appended seq", r.Seq)

	cancel() // Run commits what is queued and returns
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	if err := l.Close(); err != nil {
		log.Fatal(err)
	}

	res, err := audit.Verify(context.Background(), path, audit.VerifyOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("verified decisions:", res.Decisions)

	out, err := audit.NewFormatter(os.Stdout, audit.FormatTable)
	if err != nil {
		log.Fatal(err)
	}
	err = audit.Query(context.Background(), path, audit.Filter{Workload: "unix:*"}, out.Write)
	if err != nil {
		log.Fatal(err)
	}
	out.Flush()
	// Output:
	// appended seq 1
	// verified decisions: 1
	// TIME                      DECISION  SUBJECT        CREDENTIAL  DATABASE  UPSTREAM_USER  POLICY               REASON                          DECISION_ID
	// 2025-01-02T03:04:05.000Z  allow     unix:uid:1000  demo        -         -              payments-can-charge  allowed by payments-can-charge  3f9c2a
}

// Count a log's decisions by workload and outcome, largest group first,
// and print them as a table.
func ExampleCounter() {
	c, err := audit.NewCounter([]string{"workload", "decision"})
	if err != nil {
		panic(err)
	}
	for _, r := range []audit.Record{
		{Subject: "unix:uid:1000", Decision: audit.DecisionAllow},
		{Subject: "unix:uid:1000", Decision: audit.DecisionAllow},
		{Subject: "system:serviceaccount:shop:orders", Decision: audit.DecisionDeny},
	} {
		c.Add(&r) // or: reader.Query(ctx, audit.Filter{Kind: audit.KindDecision}, c.Add)
	}
	audit.WriteCounts(os.Stdout, audit.FormatTable, c.Keys(), c.Counts())
	// Output:
	// WORKLOAD                           DECISION  COUNT
	// unix:uid:1000                      allow     2
	// system:serviceaccount:shop:orders  deny      1
}
