// Package postgres issues short-lived PostgreSQL login roles, one per issue,
// created and dropped by the broker through an admin connection.
//
// A credential is configured under credentials: as
//
//	credentials:
//	  - name: orders-db
//	    ttl: 1h
//	    postgres:
//	      admin_dsn_file: secrets/orders-admin.dsn  # libpq URL or key=value DSN; required
//	      grant: [orders_rw]         # roles the issued role is a member of; default none
//	      database: orders           # database apps (and the admin connection) use; default the DSN's
//	      host: db.internal          # what apps connect to; default the DSN's host
//	      port: 5432                 # default the DSN's port
//	      role_prefix: credbroker_   # default credbroker_
//	      reassign_to: orders_owner  # receives the objects of a revoked role; default the admin role
//	      connection_limit: 5        # sessions per issued role; default 0, no limit
//	      admin_connections: 2       # admin connections at once; default 2
//
// Each Credential call creates a LOGIN role named from the workload subject
// (the prefix, the subject reduced to [a-z0-9_], a random suffix; at most 63
// bytes), with a random password of 32 bytes (URL-safe base64), VALID UNTIL
// the lease's expiry, member of the grant roles, and the comment
// "credbroker install <install id>" that marks it as this install's. The
// password is sent as a SCRAM-SHA-256 verifier computed by the broker, as
// psql's \password does, so that the plaintext never reaches the server or
// its statement log. The credential's fields are username, password, host,
// port and database; its lease id is "postgres:<role>".
//
// Revoke (a providers.Revoker) stops the role's logins, ends its sessions,
// reassigns what it owns in the admin connection's database to
// reassign_to, drops its remaining privileges, and drops it; a role already
// gone is revoked without error, and a role without this install's comment
// is never dropped. Owned (a providers.Sweeper) lists the roles with the
// prefix and this install's comment, so that leftovers of an earlier run
// are revoked.
//
// The admin DSN file is read at every (re)connect, so it can be rotated;
// its content never appears in an error or a log line. The admin role
// needs CREATEROLE, INHERIT (the default), membership with ADMIN OPTION in
// the grant roles (required from PostgreSQL 16 on; CREATEROLE suffices
// before), membership in reassign_to when that is set, and CONNECT on the
// database. Each issued role has the admin role as a member, which is what
// lets the admin end its sessions and reassign its objects.
//
//	CREATE ROLE credbroker_admin LOGIN CREATEROLE PASSWORD '…';
//	GRANT orders_rw TO credbroker_admin WITH ADMIN OPTION;
//	GRANT orders_owner TO credbroker_admin;      -- when reassign_to: orders_owner
//
// New reads the DSN file but does not connect: a server that is down at
// start is reported by the first Credential call, and the admin connections
// reconnect on their own afterwards. A connection broken while idle (a
// server restart) costs no failed issue: the call is retried once on a new
// connection.
package postgres
