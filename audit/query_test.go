package audit

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// queryRows are appended in this order; d5 is older than d1.
var queryRows = []struct {
	id, subject, decision, credential, policy string
	at                                        time.Duration
}{
	{"d1", "system:serviceaccount:payments:api", DecisionAllow, "stripe", "pay-charge", 10 * time.Second},
	{"d2", "system:serviceaccount:payments:worker", DecisionDeny, "stripe", "", 20 * time.Second},
	{"d3", "system:serviceaccount:billing:api", DecisionAllow, "ledger-db", "billing", 30 * time.Second},
	{"d4", "unix:uid:1000", DecisionError, "demo", "", 40 * time.Second},
	{"d5", "spiffe://prod.example.org/ns/payments/sa/api", DecisionAllow, "stripe", "pay-charge", 5 * time.Second},
	{"d6", "unix:uid:1001", DecisionAllow, "demo", "local", 50 * time.Second},
}

func TestQuery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path})
	for _, q := range queryRows {
		r := testRecord(0, t0.Add(q.at))
		r.DecisionID, r.Subject, r.Decision, r.Credential, r.Policy = q.id, q.subject, q.decision, q.credential, q.policy
		if err := l.Append(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	at := func(d time.Duration) time.Time { return t0.Add(d * time.Second) }
	tests := []struct {
		name string
		f    Filter
		want []string
	}{
		{"everything, oldest first", Filter{}, []string{"d5", "d1", "d2", "d3", "d4", "d6"}},
		{"time window, until exclusive", Filter{Since: at(20), Until: at(40)}, []string{"d2", "d3"}},
		{"since only", Filter{Since: at(40)}, []string{"d4", "d6"}},
		{"exact subject", Filter{Workload: "unix:uid:1000"}, []string{"d4"}},
		{"glob with literal prefix", Filter{Workload: "system:serviceaccount:payments:*"}, []string{"d1", "d2"}},
		{"glob without prefix", Filter{Workload: "*:api"}, []string{"d1", "d3"}},
		{"glob in the middle", Filter{Workload: "*payments*"}, []string{"d5", "d1", "d2"}},
		{"glob with class", Filter{Workload: "unix:uid:100[0-9]"}, []string{"d4", "d6"}},
		{"glob with ?", Filter{Workload: "unix:uid:100?"}, []string{"d4", "d6"}},
		{"glob is case-sensitive", Filter{Workload: "UNIX:*"}, nil},
		{"credential", Filter{Credential: "stripe"}, []string{"d5", "d1", "d2"}},
		{"decision", Filter{Decision: DecisionDeny}, []string{"d2"}},
		{"policy", Filter{Policy: "pay-charge"}, []string{"d5", "d1"}},
		{"limit", Filter{Limit: 2}, []string{"d5", "d1"}},
		{"window and glob", Filter{Since: at(15), Workload: "system:*"}, []string{"d2", "d3"}},
		{"window and exact subject", Filter{Since: at(0), Until: at(60), Workload: "unix:uid:1001"}, []string{"d6"}},
		{"far-out times", Filter{Since: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), Until: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}, []string{"d5", "d1", "d2", "d3", "d4", "d6"}},
		{"nothing matches", Filter{Credential: "nope"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			err := Query(context.Background(), path, tt.f, func(r *Record) error {
				got = append(got, r.DecisionID)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Query(%+v) = %v, want %v", tt.f, got, tt.want)
			}
		})
	}
}

func TestQueryErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path})
	appendN(t, l.Log, 3, t0)
	stop := errors.New("stop")
	n := 0
	err := Query(context.Background(), path, Filter{}, func(*Record) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("Query = %v after %d rows, want the callback's error after 1", err, n)
	}
	if err := Query(context.Background(), path, Filter{Decision: "maybe"}, nil); err == nil {
		t.Error("Query accepted decision \"maybe\"")
	}
	if err := Query(context.Background(), filepath.Join(t.TempDir(), "none.db"), Filter{}, nil); err == nil {
		t.Error("Query of a missing database succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Query(ctx, path, Filter{}, func(*Record) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("Query with a cancelled context = %v", err)
	}
}

func TestGlobPrefix(t *testing.T) {
	tests := []struct{ glob, prefix, end string }{
		{"system:serviceaccount:payments:*", "system:serviceaccount:payments:", "system:serviceaccount:payments;"},
		{"unix:uid:1000", "unix:uid:1000", "unix:uid:1001"},
		{"*", "", ""},
		{"a?", "a", "b"},
		{"ab[c]", "ab", "ac"},
		{"a\xff*", "a\xff", "b"},
		{"\xff\xff*", "\xff\xff", ""},
	}
	for _, tt := range tests {
		p := globPrefix(tt.glob)
		end, _ := prefixEnd(p)
		if p != tt.prefix || end != tt.end {
			t.Errorf("globPrefix(%q) = %q, end %q; want %q, %q", tt.glob, p, end, tt.prefix, tt.end)
		}
	}
}

// A single log's Reader answers as Query does and refuses the filters only
// a fleet store can answer.
func TestFileReader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path})
	recs := make([]*Record, 3)
	for i := range recs {
		recs[i] = testRecord(i, t0)
		recs[i].Subject = fmt.Sprintf("unix:uid:%d", 1000+i)
		if err := l.Append(context.Background(), recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	l.stop(t)
	r := OpenFile(path)
	defer r.Close()
	var got []string
	err := r.Query(context.Background(), Filter{Workload: recs[1].Subject}, func(rec *Record) error {
		got = append(got, rec.DecisionID)
		return nil
	})
	if err != nil || !slices.Equal(got, []string{recs[1].DecisionID}) {
		t.Fatalf("Query(%s) = %v, %v; want [%s]", recs[1].Subject, got, err, recs[1].DecisionID)
	}
	for _, f := range []Filter{{Install: "abc"}, {Host: "web-1"}} {
		if err := r.Query(context.Background(), f, func(*Record) error { return nil }); !errors.Is(err, ErrFleetOnly) {
			t.Errorf("Query(%+v) = %v, want ErrFleetOnly", f, err)
		}
	}
}
