// Package unix attests the process at the other end of a Unix-domain socket
// — or of a TCP loopback connection ([Attestor.AttestTCP], which Attest
// calls for a *net.TCPConn) — from facts the kernel holds about it, and
// nothing the caller says.
//
// An [Attestor] attests the process that wrote a request: connections come
// from its [Listener], which has the kernel attach the writer's credentials
// to every write (SO_PASSCRED) and notes, at accept, which process
// connected (SO_PEERCRED, SO_PEERPIDFD) and which executable it ran. Attest
// then reads the process's executable and cgroup membership from /proc, and
// returns an [attest.Identity]:
//
//	Method:  "unix"
//	Subject: "unix:uid:1000"
//	Claims:  uid, gid, pid (int64), exe (the target of /proc/PID/exe),
//	         exe_sha256 (lowercase hex of that file's content), and, when the
//	         cgroup path is a Kubernetes or container-runtime layout,
//	         pod_uid (dashed form) and container_id (64 hex digits).
//
// Usage:
//
//	a, err := unix.New(unix.Config{Logger: logger})
//	if err != nil { … }
//	ln, err := a.Listen(unixListener) // serve the API on ln
//	…
//	id, err := a.Attest(ctx, conn) // conn came from ln.Accept; the request was read
//	if errors.Is(err, attest.ErrFailed) { … refuse the request … }
//
// # The sender, not the connector
//
// SO_PEERCRED describes the process that connected. A connection can be
// inherited by a child, passed to another process, or kept across setuid
// or execve; the connector's credentials would then vouch for bytes
// someone else wrote. A [Conn] records, per read, the writer's pid, uid and
// gid (SCM_CREDENTIALS); the kernel never merges two
// writers' bytes into one read. Attest refuses the connection once any
// byte came from a process other than the connecting one (by pid: the
// connecting process's pidfd, or its start time, shows it held that pid
// from connect to attestation, so nobody else wrote under it), came
// without credentials or with descriptors, and refuses when the connecting
// process's executable (device and inode) differs from the one it ran at
// accept. uid and gid are the writer's real ids.
//
// # The race it closes
//
// SO_PEERCRED reports the pid of the process that connected, as it was at
// connect time. By the time the broker reads /proc/PID the peer may have
// exited and its pid may belong to another process, whose executable and
// cgroup would then be attributed to the connection. Attest refuses such a
// connection with an *attest.Error ("peer process exited or was replaced
// during attestation"):
//
//   - On Linux 6.5 and later the attestor takes a pidfd for the peer with
//     getsockopt(SO_PEERPIDFD). That pidfd refers to the very process that
//     connected, not to a pid number. After /proc/PID has been read, a null
//     signal sent through the pidfd must reach the process: if it does, the
//     connecting process held the pid for the whole read, so what was read
//     is its own. If it does not (ESRCH), the peer is gone and the reads may
//     describe a stranger.
//
//   - On older kernels, or with Config.DisablePidfd, the attestor opens the
//     /proc/PID directory right after taking the peer credentials and reads
//     through that handle, which the kernel ties to one process: reads fail
//     once that process is gone, even if the pid is reused. It compares the
//     process start time (field 22 of /proc/PID/stat) before and after the
//     reads, as SPIRE's peertracker does, and in addition requires that the
//     process holds the connection's other end among its open files (found
//     with the kernel's unix sock_diag interface). Without that last check a
//     peer that had exited, and whose pid had been reused, before Attest was
//     even called would go unnoticed, since the start time taken first would
//     already be the newcomer's. It follows that in this mode a peer that
//     closed its end of the connection is refused. New fails when the kernel
//     offers neither SO_PEERPIDFD nor unix sock_diag.
//
// In both modes a peer that handed its connection to another process and
// exited is refused: the identity is that of the process that connected.
//
// # What it does not close
//
// exe and exe_sha256 describe the peer's executable when /proc is read. A
// process that writes its request and calls execve(2) before the broker
// accepts the connection is attested with the new image: the kernel keeps
// no exec time to compare with the write. An execve of the same file is
// not seen. Code that can ptrace the peer (same uid, or root) can make it
// write anything. Policies that rely on exe or exe_sha256 should also
// select on uid, pod or container.
//
// The executable is reached through /proc/PID/exe, which needs the broker to
// be allowed to ptrace-read the peer (same uid, or CAP_SYS_PTRACE); when it
// cannot, Attest fails rather than return an identity without exe claims. A
// peer in a pid namespace the broker cannot see (SO_PEERCRED pid 0) is
// refused, and New refuses a Config.ProcRoot that belongs to another pid
// namespace than the broker's, since its pids would name other processes.
//
// # Cost
//
// Attest is meant to run per request. With pidfds, a connection holds, from
// accept to Close, what cannot change while the process that connected
// holds it: its credentials at connect time, its pidfd, its /proc/PID
// directory and its open cgroup file. Each Attest then makes four system
// calls: a stat and a readlink of the executable through the held
// directory (an exec shows as a new executable), a read of the cgroup file
// from its start (the kernel produces it afresh), and the null signal
// through the pidfd. Hashes are cached by file identity
// (device, inode, size, modification and change time), taken by stat through
// /proc/PID/exe, so a warm Attest does not open the executable at all; a
// replaced or rewritten file has a new identity and is hashed anew, streamed
// through /proc/PID/exe, which works even when its path was replaced or
// deleted. /proc files are read with one read into a pooled buffer. The
// cgroup claims are read on every call, since a process can move between
// cgroups.
package unix
