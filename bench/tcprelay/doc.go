// Command tcprelay is the gorelay target of scripts/bench-db.sh: a bare TCP
// relay on Go's standard library, what relaying the plain Go way costs.
//
//	tcprelay -listen 127.0.0.1:0 -upstream 127.0.0.1:5432 -addr-file ADDR
//
// It accepts connections on -listen, dials -upstream for each, and copies
// bytes both ways with io.Copy until either side ends, then closes both,
// with none of what the broker does before it: no attestation, no
// decision, no audit row, no login. Between two plain TCP sockets io.Copy
// reaches (*net.TCPConn).ReadFrom, which has the kernel splice the bytes
// through a pipe instead of copying them into the process; each direction
// is a goroutine woken by the netpoller for every message. (The broker's
// listeners relay on an epoll event loop instead: inject/listener.) The client authenticates itself to
// the server through it, as through HAProxy's `mode tcp`.
//
// Once listening it prints the address to stdout and writes it to
// -addr-file (atomically) so that a script needs no fixed port. SIGTERM or
// SIGINT stops it: it stops accepting, cuts the sessions still open and
// prints to stderr how many connections it relayed and how many it closed
// because the upstream could not be dialled.
//
// The standard library only: it imports nothing of credbroker's, so that
// what it measures is Go's relay and nothing else.
package main
