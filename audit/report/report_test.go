package report

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/credbroker/credbroker/audit"
)

// base is the start of the test log's window.
var base = time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC)

// Subjects of the test log; hostile ones among them.
const (
	alice     = "unix:uid:1000"
	bob       = "system:serviceaccount:shop:orders"
	scripted  = `<script>alert("x")</script>`
	bidi      = "spiffe://prod/ns/pay\u202egnp.exe"
	hostileCr = `orders-db"><img src=x onerror=alert(1)>`
)

// testLog is the log written by writeLog, and what a report of the window
// [base, base+48h) must count in it.
type testLog struct {
	path string
	// decisions in the window, by subject and outcome.
	want map[string]Counts
}

// writeLog writes a log with known rows through audit.Log, as the broker
// does: decisions in the window and outside it, two versions of one
// policy, default denies, errors without a subject, hostile strings, and
// lease events.
func writeLog(t *testing.T) *testLog {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.db")
	ctx, cancel := context.WithCancel(context.Background())
	l, err := audit.Open(ctx, audit.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	n := 0
	add := func(at time.Duration, decision, subject, credential, policy, version, reason string) {
		t.Helper()
		n++
		r := &audit.Record{
			Time: base.Add(at), DecisionID: "d" + strings.Repeat("0", 3-len(itoa(n))) + itoa(n), Decision: decision,
			Reason: reason, Policy: policy, PolicyVersion: version, Subject: subject, Credential: credential,
			Attestor: "unix", PeerUID: -1, Channel: "socket", Input: json.RawMessage(`{}`),
		}
		if subject != "" {
			r.Attestor = strings.SplitN(subject, ":", 2)[0]
		}
		if err := l.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	allowed := func(p string) string { return "allowed by policy " + p }
	// Before the window: not counted.
	add(-time.Minute, audit.DecisionAllow, alice, "demo", "dev", "v1aaaaaaaaaa", allowed("dev"))
	// Hour 0: three allows of alice under dev v1, one default deny of the script subject.
	add(5*time.Minute, audit.DecisionAllow, alice, "demo", "dev", "v1aaaaaaaaaa", allowed("dev"))
	add(10*time.Minute, audit.DecisionAllow, alice, "demo", "dev", "v1aaaaaaaaaa", allowed("dev"))
	add(50*time.Minute, audit.DecisionAllow, alice, "orders-db", "dev", "v1aaaaaaaaaa", allowed("dev"))
	add(55*time.Minute, audit.DecisionDeny, scripted, "demo", "", "set1set1set1", "no policy allows "+scripted+" to read demo")
	// Hour 5: bob allowed twice by orders, denied once by the deny policy; an error without a subject.
	add(5*time.Hour, audit.DecisionAllow, bob, "orders-db", "orders", "ordersv1ordr", allowed("orders"))
	add(5*time.Hour+time.Second, audit.DecisionAllow, bob, "orders-db", "orders", "ordersv1ordr", allowed("orders"))
	add(5*time.Hour+2*time.Second, audit.DecisionDeny, bob, hostileCr, "no-prod", "noprodv1nopr", "denied by policy no-prod")
	add(5*time.Hour+3*time.Second, audit.DecisionError, "", "demo", "", "", "kubernetes: token expired")
	// Hour 30: dev changed to v2; a bidi subject is denied by default, twice; another error.
	add(30*time.Hour, audit.DecisionAllow, alice, "demo", "dev", "v2bbbbbbbbbb", allowed("dev"))
	add(30*time.Hour+time.Minute, audit.DecisionDeny, bidi, "demo", "", "set2set2set2", "no policy allows "+bidi+" to read demo")
	add(30*time.Hour+2*time.Minute, audit.DecisionDeny, bidi, "demo", "", "set2set2set2", "no policy allows "+bidi+" to read demo")
	add(31*time.Hour, audit.DecisionError, "", "demo", "", "", "kubernetes: token expired")
	// At the window's end: not counted.
	add(48*time.Hour, audit.DecisionAllow, alice, "demo", "dev", "v2bbbbbbbbbb", allowed("dev"))
	for _, ev := range []audit.LeaseEvent{
		{Event: audit.LeaseIssue, Time: base.Add(5 * time.Hour), LeaseID: "l1", Credential: "orders-db", Subject: bob, Provider: "postgres"},
		{Event: audit.LeaseIssue, Time: base.Add(5*time.Hour + time.Second), LeaseID: "l2", Credential: "orders-db", Subject: bob, Provider: "postgres"},
		{Event: audit.LeaseRevoke, Time: base.Add(6 * time.Hour), LeaseID: "l1", Credential: "orders-db", Subject: bob, Provider: "postgres", Attempt: 1},
	} {
		if err := l.RecordLease(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return &testLog{path: path, want: map[string]Counts{
		alice:    {Allow: 4},
		bob:      {Allow: 2, Deny: 1},
		scripted: {Deny: 1},
		bidi:     {Deny: 2},
		"":       {Error: 2},
	}}
}

func itoa(n int) string { return number(int64(n)) }

// buildFromLog builds the report of the test log's window, verified.
func buildFromLog(t *testing.T, tl *testLog) *Report {
	t.Helper()
	ctx := context.Background()
	store := audit.OpenFile(tl.path)
	defer store.Close()
	res, err := audit.Verify(ctx, tl.path, audit.VerifyOptions{})
	rep, err := Build(ctx, store, Options{
		Since: base, Until: base.Add(48 * time.Hour), Source: "audit log " + tl.path,
		Generated: base.Add(50 * time.Hour), Generator: "credbroker test", Verification: FileVerification(res, err),
	})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestBuildCounts checks every tally of a report against the known rows of
// a log written through audit.Log.
func TestBuildCounts(t *testing.T) {
	tl := writeLog(t)
	rep := buildFromLog(t, tl)

	if want := (Counts{Allow: 6, Deny: 4, Error: 2}); rep.Totals != want {
		t.Errorf("totals %+v, want %+v", rep.Totals, want)
	}
	if rep.Step != time.Hour || len(rep.Timeline) != 48 {
		t.Fatalf("step %v with %d buckets, want an hour with 48", rep.Step, len(rep.Timeline))
	}
	wantBuckets := map[int]Counts{0: {Allow: 3, Deny: 1}, 5: {Allow: 2, Deny: 1, Error: 1}, 30: {Allow: 1, Deny: 2}, 31: {Error: 1}}
	for i, b := range rep.Timeline {
		if !b.Start.Equal(base.Add(time.Duration(i) * time.Hour)) {
			t.Errorf("bucket %d starts at %v", i, b.Start)
		}
		if b.Counts != wantBuckets[i] {
			t.Errorf("bucket %d (%v): %+v, want %+v", i, b.Start, b.Counts, wantBuckets[i])
		}
	}

	if rep.Workloads.Distinct != len(tl.want) || len(rep.Workloads.Top) != len(tl.want) || rep.Workloads.OtherNames != 0 {
		t.Errorf("workloads: %+v, want every one of %d", rep.Workloads, len(tl.want))
	}
	for _, w := range rep.Workloads.Top {
		if w.Counts != tl.want[w.Name] {
			t.Errorf("workload %q: %+v, want %+v", w.Name, w.Counts, tl.want[w.Name])
		}
	}
	if got := names(rep.Workloads.Top); !slices.Equal(got, []string{alice, bob, "", bidi, scripted}) {
		t.Errorf("workloads ranked %q: want by decisions, then name", got)
	}
	wantCreds := []Tally{{"demo", Counts{Allow: 3, Deny: 3, Error: 2}}, {"orders-db", Counts{Allow: 3}}, {hostileCr, Counts{Deny: 1}}}
	if !slices.Equal(rep.Credentials.Top, wantCreds) {
		t.Errorf("credentials %+v, want %+v", rep.Credentials.Top, wantCreds)
	}

	wantReasons := []Reason{
		{audit.DecisionDeny, "no policy allows " + bidi + " to read demo", 2, base.Add(30*time.Hour + 2*time.Minute), "d012"},
		{audit.DecisionError, "kubernetes: token expired", 2, base.Add(31 * time.Hour), "d013"},
		{audit.DecisionDeny, "denied by policy no-prod", 1, base.Add(5*time.Hour + 2*time.Second), "d008"},
		{audit.DecisionDeny, "no policy allows " + scripted + " to read demo", 1, base.Add(55 * time.Minute), "d005"},
	}
	if !slices.EqualFunc(rep.Reasons, wantReasons, func(a, b Reason) bool {
		return a.Decision == b.Decision && a.Reason == b.Reason && a.Count == b.Count && a.Last.Equal(b.Last) && a.Example == b.Example
	}) {
		t.Errorf("reasons:\n got %+v\nwant %+v", rep.Reasons, wantReasons)
	}

	wantPolicies := []PolicyVersion{
		{Policy: "", Version: "set1set1set1", First: base.Add(55 * time.Minute), Last: base.Add(55 * time.Minute), Counts: Counts{Deny: 1}},
		{Policy: "", Version: "set2set2set2", First: base.Add(30*time.Hour + time.Minute), Last: base.Add(30*time.Hour + 2*time.Minute), Counts: Counts{Deny: 2}, Replaced: "set1set1set1"},
		{Policy: "dev", Version: "v1aaaaaaaaaa", First: base.Add(5 * time.Minute), Last: base.Add(50 * time.Minute), Counts: Counts{Allow: 3}},
		{Policy: "dev", Version: "v2bbbbbbbbbb", First: base.Add(30 * time.Hour), Last: base.Add(30 * time.Hour), Counts: Counts{Allow: 1}, Replaced: "v1aaaaaaaaaa"},
		{Policy: "no-prod", Version: "noprodv1nopr", First: base.Add(5*time.Hour + 2*time.Second), Last: base.Add(5*time.Hour + 2*time.Second), Counts: Counts{Deny: 1}},
		{Policy: "orders", Version: "ordersv1ordr", First: base.Add(5 * time.Hour), Last: base.Add(5*time.Hour + time.Second), Counts: Counts{Allow: 2}},
	}
	if !slices.EqualFunc(rep.Policies, wantPolicies, func(a, b PolicyVersion) bool {
		return a.Policy == b.Policy && a.Version == b.Version && a.First.Equal(b.First) && a.Last.Equal(b.Last) && a.Counts == b.Counts && a.Replaced == b.Replaced
	}) {
		t.Errorf("policies:\n got %+v\nwant %+v", rep.Policies, wantPolicies)
	}

	if want := []EventCount{{audit.LeaseIssue, 2}, {audit.LeaseRevoke, 1}}; !slices.Equal(rep.Leases, want) {
		t.Errorf("leases %+v, want %+v", rep.Leases, want)
	}
	if rep.Rows != 15 { // 12 decisions and 3 lease events; signed heads are not read
		t.Errorf("%d rows read, want 15", rep.Rows)
	}
	if rep.NoticeCount != 0 || len(rep.Installs) != 0 {
		t.Errorf("notices %d, installs %+v: want none in a single log without failures", rep.NoticeCount, rep.Installs)
	}
	if rep.Verification.Status != Verified {
		t.Errorf("verification %v (%s), want verified: the key file is beside the log", rep.Verification.Status, rep.Verification.Summary)
	}
}

func names(ts []Tally) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Name)
	}
	return out
}

// sliceReader is an audit.Reader over records in memory, filtering by the
// window and the install only, as the report asks.
type sliceReader []*audit.Record

func (s sliceReader) Query(_ context.Context, f audit.Filter, fn func(*audit.Record) error) error {
	for _, r := range s {
		if r.Time.Before(f.Since) || !r.Time.Before(f.Until) || (f.Install != "" && r.Install != f.Install) {
			continue
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

func (sliceReader) Close() error { return nil }

// TestBuildKindsAndLimits checks what a single log rarely holds: notices,
// rows of several installs, more names than the top tables list, more
// reasons than listed, and long windows drawn per day.
func TestBuildKindsAndLimits(t *testing.T) {
	var rows sliceReader
	at := func(d time.Duration) time.Time { return base.Add(d) }
	for i := range 15 {
		for range i + 1 { // workload i has i+1 denials, each with its own reason
			rows = append(rows, &audit.Record{Time: at(time.Duration(i) * 24 * time.Hour), Decision: audit.DecisionDeny,
				Subject: "w" + itoa(100+i), Credential: "c" + itoa(100+i), Reason: "reason " + itoa(len(rows)),
				Install: "inst-a", Host: "host-a"})
		}
	}
	rows = append(rows,
		&audit.Record{Time: at(time.Hour), Kind: audit.KindUndelivered, DecisionID: "u1", Reason: "commit reported failed; credential not delivered", Install: "inst-b", Host: "host-b"},
		&audit.Record{Time: at(2 * time.Hour), Kind: audit.KindOverride, DecisionID: "o1", Reason: "operator accepted a rewound log", Install: "inst-b", Host: "host-b"},
		&audit.Record{Time: at(3 * time.Hour), Kind: audit.KindSignedHead, Install: "inst-b", Host: "host-b"},
		&audit.Record{Time: at(4 * time.Hour), Kind: audit.KindLease, Decision: "future_event", Install: "inst-b", Host: "host-b"},
	)
	rep, err := Build(context.Background(), rows, Options{Since: base, Until: base.Add(30 * 24 * time.Hour), Top: 3})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Step != 24*time.Hour || len(rep.Timeline) != 30 {
		t.Errorf("step %v, %d buckets: want a day, 30", rep.Step, len(rep.Timeline))
	}
	if rep.Timeline[14].Deny != 15 || rep.Totals.Deny != 120 {
		t.Errorf("day 14 has %d denials, %d in all: want 15 and 120", rep.Timeline[14].Deny, rep.Totals.Deny)
	}
	w := rep.Workloads
	if len(w.Top) != 3 || w.Top[0].Name != "w114" || w.Top[0].Deny != 15 || w.OtherNames != 12 || w.Others.Deny != 120-15-14-13 || w.Distinct != 15 {
		t.Errorf("workloads %+v: want the top 3 and 12 others summed", w)
	}
	if len(rep.Reasons) != maxReasons || rep.OtherReasons.Count != 120-maxReasons {
		t.Errorf("%d reasons listed, %d summed: want %d and %d", len(rep.Reasons), rep.OtherReasons.Count, maxReasons, 120-maxReasons)
	}
	if rep.NoticeCount != 2 || len(rep.Notices) != 2 || rep.Notices[0].Kind != audit.KindUndelivered || rep.Notices[1].DecisionID != "o1" {
		t.Errorf("notices %+v (%d): want the undelivered row, then the override", rep.Notices, rep.NoticeCount)
	}
	if want := []EventCount{{"future_event", 1}}; !slices.Equal(rep.Leases, want) {
		t.Errorf("leases %+v, want %+v", rep.Leases, want)
	}
	if len(rep.Installs) != 2 || rep.Installs[0].Install != "inst-a" || rep.Installs[0].Rows != 120 || rep.Installs[0].Deny != 120 ||
		rep.Installs[1].Rows != 3 || rep.Installs[1].Counts != (Counts{}) || !rep.Installs[1].Last.Equal(at(4*time.Hour)) {
		t.Errorf("installs %+v", rep.Installs)
	}
	if rep.Rows != 123 { // the signed head is not counted
		t.Errorf("%d rows, want 123", rep.Rows)
	}
	one, err := Build(context.Background(), rows, Options{Since: base, Until: base.Add(30 * 24 * time.Hour), Install: "inst-b"})
	if err != nil {
		t.Fatal(err)
	}
	if one.Rows != 3 || one.Totals.Total() != 0 || len(one.Installs) != 1 || one.NoticeCount != 2 {
		t.Errorf("install inst-b: %d rows, %d decisions, installs %+v: want its 3 rows only", one.Rows, one.Totals.Total(), one.Installs)
	}

	long, err := Build(context.Background(), rows, Options{Since: base, Until: base.Add(1000 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if long.Step != 3*24*time.Hour || len(long.Timeline) > maxBuckets || long.Timeline[0].Start.After(base) {
		t.Fatalf("1000 days: step %v, %d buckets from %v: want 3 days, at most %d, from %v or before", long.Step, len(long.Timeline), long.Timeline[0].Start, maxBuckets, base)
	}
	for _, b := range long.Timeline {
		var want int64
		for i := range 15 { // day i has i+1 denials
			if day := at(time.Duration(i) * 24 * time.Hour); !day.Before(b.Start) && day.Before(b.Start.Add(long.Step)) {
				want += int64(i + 1)
			}
		}
		if b.Deny != want {
			t.Errorf("1000 days: bucket %v has %d denials, want %d", b.Start, b.Deny, want)
		}
	}
}

// TestBuildRefuses checks the window and options Build refuses.
func TestBuildRefuses(t *testing.T) {
	for _, opts := range []Options{
		{},
		{Since: base},
		{Since: base, Until: base},
		{Since: base.Add(time.Hour), Until: base},
		{Since: base, Until: base.Add(time.Hour), Top: -1},
	} {
		if _, err := Build(context.Background(), sliceReader{}, opts); err == nil || !strings.HasPrefix(err.Error(), "report: ") {
			t.Errorf("Build(%+v) = %v, want a report: error", opts, err)
		}
	}
}

// TestHTMLEscapes renders the test log's report and checks that no
// hostile value reaches the page unescaped, that a value with a
// bidirectional override is shown quoted, and that the page loads nothing.
func TestHTMLEscapes(t *testing.T) {
	rep := buildFromLog(t, writeLog(t))
	var b bytes.Buffer
	if err := rep.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, raw := range []string{scripted, hostileCr, "<img", bidi, "\u202e"} {
		if strings.Contains(page, raw) {
			t.Errorf("the page holds %q unescaped", raw)
		}
	}
	for _, escaped := range []string{
		`&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;`,
		`orders-db&#34;&gt;&lt;img src=x onerror=alert(1)&gt;`,
		`<span class="esc" title="shown quoted: the value holds non-printing characters">&#34;spiffe://prod/ns/pay\u202egnp.exe&#34;</span>`,
	} {
		if !strings.Contains(page, escaped) {
			t.Errorf("the page lacks %s", escaped)
		}
	}
	if n := strings.Count(page, "<script"); n != 0 {
		t.Errorf("the page has %d script elements", n)
	}
	for _, load := range []string{"href=", "url(", "@import", "<link", "<img", "<iframe", "<object", "<embed"} {
		if strings.Contains(strings.ToLower(page), load) {
			t.Errorf("the page loads something: it holds %q", load)
		}
	}
	if n := strings.Count(page, "src="); n != 1 { // the hostile credential's text, escaped
		t.Errorf("the page holds src= %d times, want once (the escaped credential name)", n)
	}
	if !strings.Contains(page, `<meta http-equiv="Content-Security-Policy" content="default-src &#39;none&#39;; style-src &#39;sha256-`) {
		t.Error("the page lacks its Content-Security-Policy")
	}
}

// TestVerificationStatus checks how FileVerification reads Verify's
// outcomes.
func TestVerificationStatus(t *testing.T) {
	res := &audit.VerifyResult{Rows: 5, Decisions: 4, FirstSeq: 1, HeadSeq: 5, HeadHash: strings.Repeat("ab", 32)}
	if v := FileVerification(res, nil); v.Status != SelfConsistent || !strings.Contains(v.Summary, "self-consistency only") {
		t.Errorf("no signed heads: %v %q", v.Status, v.Summary)
	}
	signed := *res
	signed.SignedHeads, signed.SignedSeq, signed.KeySource = 1, 4, "key file x.key"
	if v := FileVerification(&signed, nil); v.Status != Verified {
		t.Errorf("signed heads checked: %v %q", v.Status, v.Summary)
	}
	f := &audit.Failure{Seq: 3, DecisionID: "d3", Problem: audit.ProblemEdited, Detail: "hash mismatch"}
	v := FileVerification(&audit.VerifyResult{Rows: 2, Failure: f}, f)
	if v.Status != Failed || v.Summary != f.Error() || !slices.Contains(v.Details, Fact{"Decision id", "d3"}) {
		t.Errorf("failure: %+v", v)
	}
	if v := FileVerification(nil, context.Canceled); v.Status != NotVerified || !strings.Contains(v.Summary, "could not be verified: context canceled") {
		t.Errorf("could not run: %+v", v)
	}
}

// TestStatusShown checks how the page shows each verification status: its
// word, its colour class and its sentence.
func TestStatusShown(t *testing.T) {
	for _, tc := range []struct {
		status      Status
		word, class string
		sentence    string
	}{
		{Verified, "verified", "ok", "the install's signatures prove its rows"},
		{SelfConsistent, "self-consistent only", "warn", "no signature was checked"},
		{Failed, "FAILED", "fail", "The log does not verify"},
		{NotVerified, "not verified", "warn", "The log was not verified"},
	} {
		rep, err := Build(context.Background(), sliceReader{}, Options{Since: base, Until: base.Add(time.Hour), Verification: Verification{Status: tc.status}})
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := rep.WriteHTML(&b); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`<span class="status ` + tc.class + `" id="integrity-status">` + tc.word + `</span>`, tc.sentence} {
			if !strings.Contains(b.String(), want) {
				t.Errorf("%v: the page lacks %q", tc.status, want)
			}
		}
	}
}
