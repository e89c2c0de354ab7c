// Package faultfs is a FUSE loopback file system for tests that injects
// real fsync failures: a test mounts a view of a backing directory, runs real
// code (SQLite) against the view, and switches fsync and fdatasync on and
// off between success and EIO.
//
// # Contract
//
// Mount serves a loopback of a backing directory (go-fuse's loopback file
// system). While FailSync(true) is in force, every fsync and fdatasync of a
// file, and every fsync of a directory, returns EIO without syncing, and
// SyncFailures counts them. Writes are not affected: they reach the backing
// files, as writes reach the page cache of a disk whose write-back failed,
// so a reader sees the data that a failed fsync did not make durable. That
// is the state in which SQLite can "resurrect" a transaction whose COMMIT
// failed.
//
// Reads, writes and mappings of regular files go through FUSE passthrough:
// the kernel serves them from the backing files and only opens, lookups,
// attributes and syncs reach the server. This is required, not an
// optimisation: the server runs in the test's own Go process, and a page
// fault on a mapping served by that process (SQLite's -shm file, a
// database read with mmap_size) deadlocks it at the next garbage
// collection, which cannot stop the faulting goroutine but stops the
// server's. Mount checks that passthrough is in effect (Linux 6.9 or later
// with CONFIG_FUSE_PASSTHROUGH) and fails with ErrNoPassthrough otherwise.
// One consequence: msync of a shared mapping syncs the backing file
// directly and is not failed (SQLite never calls it).
//
// POSIX advisory locks (fcntl F_SETLK, and open-file-description locks)
// are not forwarded: the kernel keeps them itself, which is correct for
// every process on this machine.
//
// Mount calls mount(2) itself (go-fuse's DirectMountStrict), so it needs
// root (CAP_SYS_ADMIN) and /dev/fuse, never the fusermount helper; when it
// cannot mount it returns an error, and a test should fail rather than
// skip. Unmount always leaves the mount point unmounted and the server
// stopped: when a file is still open it detaches the mount and aborts the
// FUSE connection (umount2 with MNT_FORCE|MNT_DETACH), and reports the
// busy mount as an error; the open file's reads and writes still reach the
// backing file (passthrough), and whatever needs the server, fsync
// included, fails with ENOTCONN.
//
// The package is for tests only: no production code imports it, so only
// test binaries link go-fuse. It builds on Linux only.
//
// # Usage
//
//	f, err := faultfs.Mount(t.TempDir(), mnt)
//	if err != nil {
//		t.Fatal(err)
//	}
//	t.Cleanup(func() {
//		if err := f.Unmount(); err != nil {
//			t.Error(err)
//		}
//	})
//	// … open files under mnt, commit …
//	f.FailSync(true)
//	// … a commit that fsyncs now fails with EIO …
//	f.FailSync(false)
package faultfs
