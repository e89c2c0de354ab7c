// Package fleet is a fleet's central audit store on PostgreSQL: every
// broker forwards its audit log — decisions, lease lifecycle rows, signed
// heads and other events, its signed checkpoints and prune anchors — to one
// database, where auditors ask the same questions of the whole fleet that
// `credbroker audit query` and `verify` answer for one log.
//
// # Forwarding
//
// A Forwarder runs beside a broker's audit log (audit: {forward: {postgres:
// {dsn_file: …}}}). It reads the SQLite log read-only, on its own
// connection and goroutine, so decisions never wait for it; it sends rows in
// batches, one transaction each, keyed (install_id, seq) and inserted with
// ON CONFLICT DO NOTHING, so a batch sent twice — after a crash, or a retry
// whose commit was lost — stores each row once. A cursor file records how
// far it got. The forwarding role needs INSERT only.
//
//	fwd, err := fleet.NewForwarder(fleet.Config{DSNFile: "/etc/credbroker/fleet.dsn", Source: "/var/lib/credbroker/audit.db"})
//	go fwd.Run(ctx)
//
// Each install is identified by the fingerprint of its audit public key
// (InstallID), recorded beside its rows, never in its chain. The store keeps
// every checkpoint it receives, never replacing one: a host whose log was cut
// short and signed again sends checkpoints the stored chain does not reach,
// and Verify reports them.
//
// # Reading
//
// A Store is an audit.Reader: Query takes the same Filter, with the same
// meaning, as a single log, plus Install and Host.
//
//	s, err := fleet.Open(ctx, dsn)
//	err = s.Query(ctx, audit.Filter{Workload: "system:serviceaccount:payments:*", Since: t}, fn)
//	results, err := s.Verify(ctx, fleet.VerifyOptions{})
//
// Init creates the schema (`credbroker audit fleet-init`): plain tables and
// B-tree indexes, idempotent statements, nothing that CockroachDB, Citus or
// Aurora PostgreSQL would not run (see docs/audit-fleet.md).
package fleet
