package audit

import (
	"os"

	"golang.org/x/sys/unix"
)

// statID returns the identity of the file at path. It asks the kernel for
// the inode number only: a stat that asks for timestamps makes the next
// write to the file stamp it with a fine-grained time (multigrain
// timestamps, Linux 6.13 and later), so that every commit would dirty the
// WAL's inode and its fsync write the inode too, a second synchronous
// write per commit.
func statID(path string) (fileID, error) {
	var st unix.Statx_t
	for {
		err := unix.Statx(unix.AT_FDCWD, path, unix.AT_STATX_DONT_SYNC, unix.STATX_INO, &st)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fileID{}, &os.PathError{Op: "statx", Path: path, Err: err}
		}
		return fileID{dev: unix.Mkdev(st.Dev_major, st.Dev_minor), ino: st.Ino}, nil
	}
}
