// Package redis is the Redis injection listener: an app connects to a
// local address without a password, and the listener logs in to one
// upstream Redis server with a credential the broker issues for that
// connection, then relays. The app never holds the password.
//
// In the configuration file, under listeners:
//
//	listeners:
//	  - redis:
//	      listen: 127.0.0.1:6380           # or unix:///run/app/redis.sock; loopback only
//	      upstream: cache.internal:6379    # or unix:///run/redis/redis.sock
//	      credential: cache                # username (optional) and password fields
//	      username_field: username         # the defaults
//	      password_field: password         # a static credential: password_field: value
//	      tls: {mode: verify-full, ca_file: …, server_name: …, cert_file: …, key_file: …}
//	      drain_timeout: 30s               # the default
//	      allow_ambient: false             # the default
//
// # Credential
//
// The listener logs in with AUTH user password, the user from the
// credential's username_field and the password from its password_field.
// Only the password field is required (Config.Fields returns it alone, for
// the loader to check against the provider): a credential without the
// username field — a static credential, whose one field is "value", with
// password_field: value — logs in as the default user with AUTH password.
// The broker is told username_field as Request.UserField.
//
// # TLS
//
// Without a tls block the upstream leg is plain. With one, mode defaults
// to verify-full: the chain is verified against ca_file (default the
// system roots) and the certificate must be issued for server_name
// (default the upstream's host; required for a unix:// upstream).
// verify-ca verifies the chain and not the name; require encrypts without
// verifying anything; disable turns TLS off. cert_file and key_file
// present a client certificate (Redis's tls-auth-clients).
//
// # A session
//
// Each accepted connection is decided once, before anything reaches the
// upstream: the broker (Decider, which *broker.Broker satisfies) attests
// the caller from its connection, and policy sees channel redis, the
// credential and the upstream as request.host (no database: Redis selects
// one per command). The decision asks for a session credential
// (Request.Session) and the grant is released when the connection ends.
//
// A refusal, or a failure to reach or log in to the upstream, is answered
// as the reply to the client's first command (read, bounded, within
// RefusalTimeout), then the connection is closed:
//
//	-NOPERM credbroker: <the broker's reason> (decision <id>)    denied, or attestation failed
//	-ERR credbroker: <the broker's reason> (decision <id>)       no such credential, provider or audit log unavailable
//	-ERR upstream authentication failed: <the server's error> (decision <id>)
//	-ERR credbroker: cannot reach the upstream redis at <upstream> (decision <id>)
//
// The server's error is shown without the password. Redis clients show
// the reply as the error of their first command (redis-cli prints it).
//
// Allowed, the listener dials the upstream (DialTimeout, then TLS), sends
// AUTH with the issued credential and reads +OK (AuthTimeout), then
// relays: replies flow back to the client as bytes, unparsed, and the
// client's commands go through a small RESP scanner, fed as they arrive,
// that looks at each command's name only. Between plain sockets the
// listener package's event loop relays both ways (listener.RelayFiltered);
// with TLS on either leg, two goroutines do.
//
// # AUTH and HELLO
//
// A client's own AUTH, and HELLO with an AUTH option, never reach the
// upstream as the client sent them. They are not answered by the listener
// either: replies must keep their order among pipelined commands, and a
// locally made +OK would have to be spliced into the upstream's reply
// stream, which the listener does not parse. Instead each is rewritten to
// log in again with the issued credential, and the upstream's own reply
// takes its place in order:
//
//	AUTH <p>, AUTH <u> <p>            -> AUTH <issued user> <issued password>   (+OK)
//	HELLO 3 AUTH <u> <p> [SETNAME n]  -> HELLO 3 AUTH <issued user> <issued password> [SETNAME n]
//
// so a client configured with any password keeps working, as the issued
// user, and a RESP3 client gets its HELLO map. The issued password goes
// upstream only; Redis redacts it in MONITOR and SLOWLOG as it does any
// AUTH. An AUTH with another number of arguments becomes a bare AUTH
// (Redis answers with its arity error); in HELLO, options are walked as
// Redis walks them and the command is cut after the first option Redis
// would refuse, so that nothing after an AUTH token but the issued
// credential is ever forwarded. Names are matched as Redis matches them
// (ASCII case-insensitively, up to a NUL byte).
//
// # The command reader
//
// Arrays of bulk strings have their header lines checked and their
// arguments copied through as they arrive, whatever their size; only AUTH
// and HELLO are held whole, up to MaxAuthBytes and MaxAuthArgs. Inline
// commands are split as Redis splits them (quotes and escapes) and sent
// as arrays. Lengths are checked before anything is allocated, with
// Redis's own limits (MaxInline, MaxBulkLen, MaxArgs). Where Redis would
// skip bytes unread (the CRLF after a bulk string, the LF of a count line)
// or stall (a NUL in an inline command), the reader refuses instead of
// guessing. A stream it cannot read is answered, after the replies to the
// commands before it, with -ERR Protocol error: <reason>, and closed, as
// Redis does. Commands waiting for the upstream are flushed before each
// read from the client that could block, so pipelined commands go
// upstream together and none waits behind the next.
//
// # Limits
//
// RESET returns a Redis connection to the default user: after it, the
// connection is the default user's (unauthenticated when that user is off)
// until the client sends AUTH, which the listener rewrites as above. The
// issued user's ACL should not allow commands that reveal or change
// credentials (CONFIG GET requirepass, ACL SETUSER): the listener relays
// every other command as it is.
//
// Run serves on a listener the caller made (for a Unix socket, wrapped by
// the unix attestor's Listen; for TCP loopback, by its ListenTCP) through
// listener.Serve, and drains sessions for up to drain_timeout when its
// context ends.
package redis
