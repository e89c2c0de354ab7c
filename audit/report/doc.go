// Package report turns an audit store's rows over a window of time into the
// document an auditor asks for: one self-contained HTML file, readable on
// screen and printed to PDF, that needs nothing but itself — inline CSS,
// inline SVG charts drawn here, no script, no font, no URL.
//
//	store := audit.OpenFile("/var/lib/credbroker/audit.db")
//	defer store.Close()
//	res, err := audit.Verify(ctx, "/var/lib/credbroker/audit.db", audit.VerifyOptions{})
//	rep, err := report.Build(ctx, store, report.Options{
//		Since:        time.Now().AddDate(0, 0, -30),
//		Until:        time.Now(),
//		Source:       "audit log /var/lib/credbroker/audit.db",
//		Verification: report.FileVerification(res, err),
//	})
//	err = rep.WriteHTML(w)
//
// Build reads the rows through an audit.Reader, so a single install's log
// and a fleet store give the same report, and tallies them: decisions per
// hour or per day by outcome (allow, deny, error), the top workloads and
// credentials, denials and errors by reason, the policy versions that
// decided and when each was first and last seen, lease lifecycle events,
// and every undelivered and override row. The verification of the chain
// and its checkpoints is not Build's to do: the caller runs the verifier
// its store has and passes the result in (Options.Verification).
//
// Everything the log holds is the callers' to influence — subjects, claims,
// reasons, credential names — so it reaches the page only through
// html/template, and a value holding non-printing characters (controls,
// bidirectional overrides, invalid UTF-8) is shown quoted, marked as such,
// so that it cannot pass for another. The page also carries a Content
// Security Policy that forbids every script and every load, as a second
// line behind the escaping.
package report
