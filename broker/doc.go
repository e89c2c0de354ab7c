// Package broker is credbroker's request pipeline: every way in — the socket
// API today, the injection listeners later — turns its caller into a Request
// and calls Broker.Decide, which attests the caller, evaluates the policy
// set, obtains the credential, records the decision in the audit log and only
// then hands the credential back.
//
// Decide is the only place that writes an audit record, so "no credential
// without a committed row" holds by construction: if the record cannot be
// committed, Decide returns an error of kind KindUnavailable and the
// credential is dropped.
//
// The package also serves the socket API (Handler, ListenUnix), the admin
// endpoints (/healthz, /readyz, /metrics), caps each listener's connections
// (LimitListener) and reloads policies (Reloader).
// It depends on its collaborators through the small interfaces declared in
// broker.go; cmd/credbroker wires the concrete attestors, providers and the
// audit log.
package broker
