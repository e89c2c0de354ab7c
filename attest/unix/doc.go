// Package unix attests the process at the other end of a Unix-domain socket
// from facts the kernel holds about it, and nothing the caller says.
//
// An [Attestor] takes the peer credentials the kernel recorded when the peer
// called connect(2) (SO_PEERCRED: pid, uid, gid), then reads the peer's
// executable and cgroup membership from /proc, and returns an
// [attest.Identity]:
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
//	id, err := a.Attest(ctx, conn) // conn is the accepted *net.UnixConn
//	if errors.Is(err, attest.ErrFailed) { … refuse the request … }
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
// exe and exe_sha256 describe the peer's executable when /proc is read, not
// when the peer connected: a process that connects and then calls execve(2)
// keeps its pid, its pidfd and its start time, and is attested with the new
// image. Policies that rely on exe or exe_sha256 should also select on uid,
// pod or container. Peer credentials are those of connect time: a process
// that changes uid afterwards is attested with the uid it connected with.
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
// Attest is meant to run per request. Hashes are cached by file identity
// (device, inode, size, modification and change time), taken by stat through
// /proc/PID/exe, so a warm Attest does not open the executable at all; a
// replaced or rewritten file has a new identity and is hashed anew, streamed
// through /proc/PID/exe, which works even when its path was replaced or
// deleted. /proc files are read with one read into a pooled buffer. The
// cgroup claims are read on every call, since a process can move between
// cgroups.
package unix
