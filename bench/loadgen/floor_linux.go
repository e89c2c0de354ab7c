package main

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// syncFunc returns the call that makes a write durable: fsync(2) or
// fdatasync(2).
func syncFunc(name string) (func(*os.File) error, error) {
	switch name {
	case "fsync":
		return (*os.File).Sync, nil
	case "fdatasync":
		return func(f *os.File) error {
			rc, err := f.SyscallConn()
			if err != nil {
				return err
			}
			var serr error
			if err := rc.Control(func(fd uintptr) {
				for {
					if serr = syscall.Fdatasync(int(fd)); serr != syscall.EINTR {
						break
					}
				}
			}); err != nil {
				return err
			}
			if serr != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
			}
			return nil
		}, nil
	}
	return nil, fmt.Errorf("-sync %q: want fsync or fdatasync", name)
}

// selfCPU returns the user plus system CPU time this process has used,
// from getrusage(2), to the microsecond.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		d, _ := procCPU("self")
		return d
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fsType names the filesystem that holds dir, from statfs(2): "" when it
// cannot tell.
func fsType(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return ""
	}
	switch uint32(st.Type) {
	case 0xEF53:
		return "ext2/3/4" // one magic number for the three
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x01021994:
		return "tmpfs"
	case 0x794C7630:
		return "overlay"
	case 0x2FC12FC1:
		return "zfs"
	case 0xF2F52010:
		return "f2fs"
	case 0x6969:
		return "nfs"
	case 0xFF534D42:
		return "cifs"
	case 0x65735546:
		return "fuse"
	}
	return fmt.Sprintf("0x%x", uint32(st.Type))
}
