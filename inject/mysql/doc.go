// Package mysql is the MySQL / MariaDB injection listener: applications
// connect to a local address with no password, and the listener logs them
// in to one upstream server with a credential the broker issues for the
// connection, then relays the session.
//
// In the configuration file, under listeners:
//
//	listeners:
//	  - mysql:
//	      listen: 127.0.0.1:3306            # or unix:///run/app/mysqld.sock; loopback only
//	      upstream: db.internal:3306        # the MySQL or MariaDB server
//	      credential: orders-db             # a credential with username and password fields
//	      tls: {mode: verify-full, ca_file: /etc/credbroker/db-ca.pem}  # mode defaults to verify-full
//	      listener_tls: {cert_file: …, key_file: …}                    # optional: TLS for clients
//	      server_version: 5.5.5-10.11.6-MariaDB                       # optional; see below
//	      drain_timeout: 10s                                           # the default
//
// # A session
//
// For each connection the listener plays server to the client: it sends a
// protocol-10 greeting (a random 20-byte nonce, mysql_native_password,
// connection id 0) and reads the client's HandshakeResponse41, switching
// to TLS first if the client asks and listener_tls is set. Lengths are
// checked before anything is allocated (a handshake packet is at most
// MaxHandshakePacket; user and database names at most 256 bytes of UTF-8);
// clients of the protocol before MySQL 4.1 are refused with a message
// saying so. Whatever password the client sent — any, or none — is
// accepted and never used, kept or logged; the listener never asks a
// client for its password in the clear. It ends the client's
// authentication as a server whose account has no password check would:
// a client that answered with mysql_native_password is done; one that
// chose caching_sha2_password (MySQL 8 clients start with it whatever the
// greeting names) is switched to it with a fresh nonce and told
// fast_auth_success for its scramble, as MySQL 8 does; any other plugin
// is switched to mysql_native_password. The client's OK (or ERR) then
// waits for the decision and the login upstream.
//
// Then the broker decides (Decider, which *broker.Broker satisfies):
// channel mysql, the upstream as host, the client's user name and default
// database as request.user and request.database, the accepted connection
// for attestation (kernel peer credentials on a Unix socket wrapped by the
// unix attestor's Listen, the socket table on TCP loopback wrapped by its
// ListenTCP; the ambient identity stands in for unseen TCP peers only
// with allow_ambient), Session set and the credential's username field
// recorded with the decision. A refusal is an ERR packet with the
// broker's message (never a secret) and the decision id.
//
// On a grant the listener plays client to the upstream: it connects over
// TCP, reads the greeting, switches to TLS per tls.mode (disable, require
// — encrypted, not verified —, verify-ca, verify-full; ca_file replaces
// the system roots; a client certificate for REQUIRE X509 accounts), and
// logs in with the issued username and password: mysql_native_password,
// caching_sha2_password (fast authentication; full authentication with
// the password over TLS, or without TLS encrypted to the server's RSA
// public key, which the listener asks the server for — an active attacker
// on an unencrypted upstream path can substitute that key, as with any
// MySQL client: use TLS), sha256_password the same way, MariaDB's
// client_ed25519, and mysql_clear_password over TLS only. One
// authentication switch is followed; mysql_old_password is refused. The
// client's default database, character set, max packet size and
// connection attributes go upstream with the login. When the upstream's
// OK arrives it is sent to the client as the answer to its handshake
// response (status flags and session-state changes included), and from
// then on bytes are copied both ways with io.Copy and nothing else — the
// sequence id of every command restarts at 0, so the two legs need no
// rewriting; between a plain client connection (listener.Raw) and a plain
// upstream one the kernel splices. The grant is released when the session
// ends (Grant.Release: a lease manager may then revoke the credential).
//
// # Capability flags
//
// The client picks its flags from the listener's greeting before the
// listener has connected upstream, and the relay passes result sets as
// they come, so every flag that shapes the command phase must be the same
// on both legs. The listener therefore advertises only flags that every
// MySQL 5.7+ and MariaDB 10.2+ server offers and that the relay passes
// unchanged — CLIENT_FOUND_ROWS, LONG_FLAG, LOCAL_FILES, IGNORE_SPACE,
// INTERACTIVE, TRANSACTIONS, MULTI_STATEMENTS, MULTI_RESULTS,
// PS_MULTI_RESULTS, SESSION_TRACK and DEPRECATE_EOF — plus those of the
// handshake itself, which each leg settles on its own (PROTOCOL_41,
// SECURE_CONNECTION, PLUGIN_AUTH, PLUGIN_AUTH_LENENC_CLIENT_DATA,
// CONNECT_WITH_DB, CONNECT_ATTRS, and SSL per leg). The upstream gets
// exactly the client's choice among the first set; if the upstream lacks
// one of them (an older server) the session is refused with the flags
// named, except LOCAL_FILES, which is then dropped (LOAD DATA LOCAL fails
// with the server's error). Never advertised or negotiated:
// CLIENT_COMPRESS and zstd compression (the relay copies bytes, not
// compressed frames), CLIENT_QUERY_ATTRIBUTES and
// OPTIONAL_RESULTSET_METADATA (MySQL 8 only; they change the framing and
// MariaDB lacks them), CAN_HANDLE_EXPIRED_PASSWORDS, and MariaDB's
// extended capabilities (CLIENT_LONG_PASSWORD, which MariaDB reads as
// CLIENT_MYSQL, is set on both legs).
//
// The greeting comes before the upstream's, so the listener cannot show
// the client the upstream's version or connection id. It announces
// server_version (default DefaultServerVersion, 8.0.0-credbroker): set it
// to the upstream's when a client adapts to the version (MySQL
// Connector/J chooses @@transaction_isolation or @@tx_isolation by it).
// Its connection id is 0, so a client that cancels by killing the id its
// greeting named (the mysql client on Ctrl-C) cannot cancel; SELECT
// CONNECTION_ID() returns the upstream's.
//
// # Error codes
//
// What the client is told when the listener ends a session before the
// relay, as MySQL error code and SQLSTATE, with a message that starts
// with "credbroker:" and names the decision where there is one:
//
//	denied by policy, caller not attested,
//	no such credential                          1045 ER_ACCESS_DENIED_ERROR  28000
//	a malformed or pre-4.1 handshake response,
//	TLS asked for but not offered                1043 ER_HANDSHAKE_ERROR      08S01
//	provider or audit log unavailable           1105 ER_UNKNOWN_ERROR        08004
//	upstream unreachable, its TLS failed, it
//	lacks a flag the client chose               1105 ER_UNKNOWN_ERROR        08004
//	the upstream refused the issued credential  the upstream's own code and SQLSTATE
//
// A client whose connection fails during the handshake (gone, or its TLS
// failed) is told nothing and nothing is recorded: it made no request. A
// handshake the listener refuses and tells the client about (malformed,
// before 4.1, TLS asked for but not offered) is decided as an invalid
// request: the caller is attested, an error row records the reason, and
// the ERR names the decision.
//
// # Why no protocol library
//
// The handshake is written here rather than taken from a server library.
// github.com/go-mysql-org/go-mysql's server package, the one maintained
// Go implementation of the server side, is not served by the Go module
// proxy this project builds from; dolthub/go-mysql-server, which is, is a
// SQL engine rather than a handshake. A server library would also own the
// pieces that matter most here: it checks the client's password against a
// provider (the listener must accept any and never use it), chooses its
// own capability flags (they must be the client-and-upstream intersection
// above), and reads commands itself (the relay must be a byte copy). The
// part written here is small: the greeting, the client's response, the
// upstream's greeting and authentication exchange, and OK/ERR packets,
// each read with lengths checked first and fuzzed
// (FuzzParseClientHello, FuzzParseGreeting, FuzzUpstreamLogin, FuzzAuthenticator).
// github.com/go-sql-driver/mysql, the project's MySQL client library,
// serves only the tests. client_ed25519 uses filippo.io/edwards25519, the
// library the standard library's ed25519 is built on, as go-sql-driver
// does.
//
// # Not relayed differently
//
// COM_CHANGE_USER is relayed like any command: it re-authenticates with
// what the client sends, so it fails unless the client knows a password of
// its own. Run serves on a listener the caller made (see Config.Network)
// and drains sessions for up to drain_timeout when its context ends.
package mysql
