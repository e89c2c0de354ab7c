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

// fileIDOf returns the identity of the open file f, asking for the inode
// number only (see statID).
func fileIDOf(f *os.File) (fileID, error) {
	var st unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_INO, &st); err != nil {
		return fileID{}, &os.PathError{Op: "statx", Path: f.Name(), Err: err}
	}
	return fileID{dev: unix.Mkdev(st.Dev_major, st.Dev_minor), ino: st.Ino}, nil
}

// syncData makes f's data durable with fdatasync(2), as a raw system call:
// the goroutine keeps its processor for the sync instead of handing it to
// another thread, which costs more than the sync itself leaves idle (the
// runtime hands off a processor after 20 µs in a system call, and an fsync
// takes 0.1 to 1 ms). The other processors go on running goroutines.
func syncData(f *os.File) error {
	for {
		_, _, errno := unix.RawSyscall(unix.SYS_FDATASYNC, f.Fd(), 0, 0)
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: errno}
	}
}
