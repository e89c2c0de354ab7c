// Package postgres is the PostgreSQL injection listener: applications
// connect to a local listener with no password, and the broker logs in to
// the one configured upstream server for them with the credential a
// decision obtained, then relays the session's bytes.
//
// In the configuration file, under listeners:
//
//	listeners:
//	  - postgres:
//	      listen: unix:///run/credbroker/pg/.s.PGSQL.5432  # psql -h /run/credbroker/pg; or 127.0.0.1:6432
//	      upstream: db.internal:5432
//	      credential: orders-db          # fields username and password (providers/postgres, static, …)
//	      tls: {mode: verify-full, ca_file: /etc/credbroker/db-ca.pem}   # the upstream leg; verify-full is the default
//	      listener_tls: {cert_file: …, key_file: …}                      # optional: TLS for clients that ask
//	      drain_timeout: 10s
//
// # A session
//
// The listener answers the client's startup itself. An SSLRequest is
// answered N, or S followed by a real TLS handshake when listener_tls is
// set (a client may still speak in the clear: the listener is on the
// loopback or a Unix socket); a GSSENCRequest is answered N, as a server
// without GSSAPI does; each may come once. Startup packets are read
// straight from the socket, exactly as long as they say, so no byte sent in
// the clear before TLS is taken for one sent under it. A packet's length
// is bounded (MaxStartupLen, PostgreSQL's own 10000 bytes) before anything
// is allocated; a packet of another length, of a protocol other than 3
// (SQLSTATE 0A000, as PostgreSQL answers protocol 2), or that does not
// parse (08P01) is refused with an ErrorResponse, and the connection
// closed. A client asking for 3.x, x > 0, is told (NegotiateProtocolVersion)
// that the session speaks 3.0 and that none of its _pq_ options are
// recognised, as a server is required to. The whole startup — packets,
// decision and upstream login — must end within StartupTimeout (one
// minute, PostgreSQL's authentication_timeout).
//
// Then one decision per connection: Decide with channel postgres, the
// configured credential, the upstream's host:port as request.host, and the
// startup message's user and database (the database defaults to the user,
// as PostgreSQL does) as request.user and request.database; the credential
// field username is recorded as the user logged in as, and the grant is
// held for the session (Grant.Release when it ends). The caller is
// attested from the connection as accepted — a Unix socket wrapped by the
// unix attestor's Listen, a TCP loopback connection by its ListenTCP —
// even when TLS runs over it. A startup message without a user (28000) or
// asking for a replication connection (0A000: the walsender protocol is
// not relayed) is still decided, as an invalid request, so the caller is
// attested and the refusal recorded.
//
// A refusal is an ErrorResponse of severity FATAL before authentication,
// whose message is the broker's message for the caller (never a secret),
// prefixed "credbroker: ", and whose detail names the decision
// ("credbroker decision ID"). Its SQLSTATE:
//
//   - 28000 (invalid_authorization_specification) when the caller is not
//     attested, the policy denies, or the listener's credential is not
//     configured (a broker misconfiguration the workload cannot fix
//     either, but still a login refused by the broker, the way
//     PostgreSQL answers a login pg_hba.conf has no entry for);
//   - 08006 (connection_failure) when the provider or the audit log is
//     unavailable, and when the upstream cannot be reached: class 08 is
//     what drivers and poolers take for "the connection could not be
//     established, try again", which is true of these; 53300
//     (too_many_connections) would tell an operator the server is out of
//     connection slots, which it is not;
//   - 08P01 (protocol_violation) for other requests the broker finds
//     malformed.
//
// # The upstream login
//
// On a grant the listener connects to the upstream (TLS per tls.mode:
// require encrypts without verifying, verify-ca verifies the chain against
// ca_file or the system roots, verify-full the chain and the host name
// or server_name; disable is plain TCP), sends a StartupMessage of
// protocol 3.0 with the credential's username in place of the client's
// user, the client's database, and the client's other parameters
// (application_name, options, client_encoding, …), which the server checks
// against the issued role's privileges as it would for any login. Not
// sent: replication (refused above) and _pq_ protocol options (declined
// above). It authenticates with SCRAM-SHA-256, SCRAM-SHA-256-PLUS
// (channel binding tls-server-end-point, used whenever the server offers
// it over TLS; over TLS without the offer the broker says it could have
// bound the channel, so a stripped offer fails the login), md5, or a
// cleartext password only over TLS: a server asking for cleartext on a
// connection without TLS is refused before any password byte is written.
// A SCRAM login completes only once the server's signature proves it
// holds the password's verifier. Kerberos, GSSAPI and SSPI are refused.
// Passwords are used as given, without SASLprep: PostgreSQL's SASLprep
// leaves printable ASCII unchanged, which is what providers/postgres
// issues; a static credential's non-ASCII password must already be in
// the normalised form the server stored.
//
// The client never sees the upstream's authentication: once the server
// says AuthenticationOk the client is told AuthenticationOk, then gets
// the server's ParameterStatus, NoticeResponse and ReadyForQuery as sent,
// and a BackendKeyData whose secret the broker drew (below). A server's
// refusal reaches the client as an ErrorResponse with the server's
// SQLSTATE and message (28P01 for a wrong password, 3D000 for an unknown
// database, …), and, when the login itself was refused, a detail naming
// the decision. The password is never written to the client: every
// message passed on before ReadyForQuery has it redacted should it appear,
// and the broker's own messages and logs never carry it.
//
// After ReadyForQuery the listener does no per-message work: it copies
// bytes both ways (io.Copy between listener.Raw of the client connection
// and the upstream connection, which between plain TCP and Unix sockets
// the kernel splices) until either side closes; then the grant is
// released. Run serves sessions under listener.Serve: at shutdown they
// may go on for drain_timeout, then are cut.
//
// # Cancel requests
//
// The client's BackendKeyData keeps the upstream backend's process id —
// so that pg_backend_pid(), pg_stat_activity and the process id of its
// own notifications agree with what its driver was told — with a secret
// the broker drew, unique among the listener's sessions; the upstream's
// own secret never reaches the client. For the session's life the
// listener maps that key to the upstream's key and the address the
// session's connection went to. A CancelRequest arriving on the listener
// with a key in the map is sent on a new connection (TLS per tls.mode) to
// that address with the upstream's key; any other is ignored, and the
// connection closed without a word, as PostgreSQL does. A cancel request
// is not a decision: like PostgreSQL, the listener takes the secret as
// the proof, and it can only interrupt a query of a session the broker
// already granted.
//
// # Why not pgconn
//
// The upstream login is the listener's own small frontend on pgproto3's
// message types rather than pgconn.Connect and Hijack, because the
// listener must control what pgconn decides for itself: it must pass every
// message of the server's startup to the client in order, as sent (pgconn
// keeps ParameterStatus in a map and hands notices to a callback), replace
// the BackendKeyData before the client sees it, and hand over to a byte
// relay without losing a byte read ahead (Hijack's frontend may hold
// buffered bytes the raw connection no longer has; here the reader's
// leftover is written to the client first); it must refuse a cleartext
// password request without TLS before answering it, and use channel
// binding by tls.mode; and it must not read PG* environment variables,
// .pgpass or service files, as pgconn.ParseConfig does, in a broker whose
// upstream comes only from its configuration. What the frontend parses
// itself — startup packets, authentication requests and SCRAM messages —
// has fuzz targets.
package postgres
