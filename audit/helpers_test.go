package audit

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// testInput is a realistic policy input: identity and request, ~400 bytes.
const testInput = `{"identity":{"method":"kubernetes","subject":"system:serviceaccount:payments:payment-processor",` +
	`"claims":{"namespace":"payments","service_account":"payment-processor","pod_name":"payment-processor-7d9f8c6b5-x2x7q",` +
	`"pod_uid":"0b5e2a4c-3f1d-4e8a-9c7b-2d6e8f1a3b5c","audience":"credbroker"}},"request":{"credential":"stripe-live",` +
	`"channel":"http","method":"POST","path":"/v1/charges","host":"api.stripe.com"}}`

// testRecord returns a realistic record: six claims, ~400 bytes of input.
func testRecord(i int, at time.Time) *Record {
	return &Record{
		Time:          at,
		DecisionID:    "dec-" + pad8(i),
		Decision:      DecisionAllow,
		Reason:        "allowed by payments-can-charge",
		Policy:        "payments-can-charge",
		PolicyVersion: "sha256:9f2c1e0b7a6d5c4b3a29181706f5e4d3c2b1a0998877665544332211ffeeddcc",
		Attestor:      "kubernetes",
		Subject:       "system:serviceaccount:payments:payment-processor",
		Claims: map[string]any{
			"namespace": "payments", "service_account": "payment-processor",
			"pod_name": "payment-processor-7d9f8c6b5-x2x7q", "pod_uid": "0b5e2a4c-3f1d-4e8a-9c7b-2d6e8f1a3b5c",
			"audience": "credbroker", "uid": 1000,
		},
		PeerPID:     4242,
		PeerUID:     1000,
		Credential:  "stripe-live",
		Provider:    "static",
		Channel:     "http",
		TargetHost:  "api.stripe.com",
		Method:      "POST",
		Path:        "/v1/charges",
		LeaseID:     "lease-" + pad8(i),
		ExpiresAt:   at.Add(15 * time.Minute),
		Fingerprint: "hmac-sha256:4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c",
		Latency:     1234567 * time.Nanosecond,
		Input:       json.RawMessage(testInput),
	}
}

// pad8 formats i with at least 8 digits.
func pad8(i int) string {
	s := strconv.Itoa(i)
	if len(s) < 8 {
		s = "00000000"[len(s):] + s
	}
	return s
}

// testLog is a Log running in the background for one test.
type testLog struct {
	*Log
	cancel context.CancelFunc
	done   chan error
}

// startLog opens a Log with cfg (Path defaulting to a fresh temp file) and
// runs it until the test ends.
func startLog(t testing.TB, cfg Config) *testLog {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "audit.db")
	}
	if cfg.SignInterval == 0 {
		// Tests count seqs: a head signed while a slow machine runs them
		// would move those after it. The shutdown's signed head is still
		// written; periodic signing has its own test.
		cfg.SignInterval = -1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	l, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tl := &testLog{Log: l, cancel: cancel, done: make(chan error, 1)}
	go func() { tl.done <- l.Run(ctx) }()
	t.Cleanup(func() { tl.stop(t) })
	return tl
}

// stop ends Run and closes the Log; it may be called more than once.
func (tl *testLog) stop(t testing.TB) {
	t.Helper()
	tl.cancel()
	if tl.done != nil {
		if err := <-tl.done; err != nil {
			t.Errorf("Run: %v", err)
		}
		tl.done = nil
	}
	if err := tl.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// appendN appends n test records and returns them.
func appendN(t testing.TB, l *Log, n int, at time.Time) []*Record {
	t.Helper()
	recs := make([]*Record, n)
	for i := range recs {
		recs[i] = testRecord(i, at.Add(time.Duration(i)*time.Second))
		if err := l.Append(context.Background(), recs[i]); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	return recs
}

// testWriter sends log output to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// discard returns a logger that drops everything.
func discard() *slog.Logger {
	return slog.New(slog.DiscardHandler)
}
