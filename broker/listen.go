//go:build linux

package broker

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// socketName is the socket's name inside the private directory it is bound
// in, before it is renamed into place.
const socketName = "s"

// maxSocketPath is the longest path a client can connect to: sun_path holds
// 108 bytes with the terminating NUL. The bind itself, through
// /proc/self/fd, has no such limit.
const maxSocketPath = 107

// privateDirAttempts bounds how often ListenUnix makes a new private
// directory when someone removed or replaced the one it made before it
// could bind the socket in it.
const privateDirAttempts = 64

// ListenUnix creates the socket API's Unix socket at path with the
// permission bits mode and, unless gid is -1, the group gid: the group whose
// members may connect when mode lets the group write (0660).
//
// It is safe in a directory that others can write: nobody can make it
// change the mode, the owner or the name of anything but the socket it
// created. The socket is bound in a new directory, mode 0700, that it makes
// in the socket's directory and then holds open; its group and mode are set
// there, where nobody else can put a symbolic link in its place, and it is
// renamed into place from there (a rename replaces a link at the target, it
// never follows one). Each step names its file relative to a directory
// descriptor — the bind goes through /proc/self/fd — never by a path
// through the socket's directory, so renaming the private directory away
// and putting a link in its place gains nothing. Until the rename the
// socket is reachable by the broker's user only, and it appears with its
// final mode and group. The listener's Addr is therefore the name it was
// bound under, in /proc, not path; closing it never removes the socket.
//
// It refuses to replace a socket another process is listening on, or
// anything that is not a socket, and replaces a stale socket. It refuses a
// socket directory owned by a user other than root and the broker's own,
// and one that every user may write without the sticky bit: their owner, or
// anyone, could replace the socket with their own once it is in place.
// A missing directory is created with mode 0755.
func ListenUnix(path string, mode os.FileMode, gid int) (*net.UnixListener, error) {
	if mode&^os.ModePerm != 0 {
		return nil, fmt.Errorf("broker: socket mode %v: permission bits only", mode)
	}
	dirPath, name := filepath.Dir(filepath.Clean(path)), filepath.Base(filepath.Clean(path))
	if name == "." || name == ".." || name == "/" {
		return nil, fmt.Errorf("broker: socket path %q names no file", path)
	}
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("broker: socket path %s is longer than a Unix socket address allows (%d bytes): clients could not connect", path, maxSocketPath)
	}
	dir, err := openSocketDir(dirPath)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)
	if err := checkStale(dir, name, path); err != nil {
		return nil, err
	}
	ln, priv, privName, err := bindPrivate(dir, name, path)
	if err != nil {
		return nil, err
	}
	defer func() {
		// After the rename there is nothing left to unlink; after a failure
		// this removes the half-made socket. Then the empty directory goes.
		_ = unix.Unlinkat(priv, socketName, 0)
		removePrivateDir(dir, privName, priv)
		unix.Close(priv)
	}()
	if err := placeSocket(dir, name, priv, mode, gid); err != nil {
		ln.Close()
		return nil, fmt.Errorf("broker: socket %s: %w", path, err)
	}
	return ln, nil
}

// placeSocket gives the socket bound in the private directory priv its group
// and mode, then renames it to name in dir.
func placeSocket(dir int, name string, priv int, mode os.FileMode, gid int) error {
	if gid != -1 {
		if err := unix.Fchownat(priv, socketName, -1, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("group %d: %w", gid, err)
		}
	}
	// Changing the group may clear mode bits; the mode is set last. No flag
	// is needed against links: nobody else can create one in priv.
	if err := unix.Fchmodat(priv, socketName, uint32(mode), 0); err != nil {
		return fmt.Errorf("mode %04o: %w", mode, err)
	}
	if err := unix.Renameat(priv, socketName, dir, name); err != nil {
		return fmt.Errorf("moving into place: %w", err)
	}
	return nil
}

// openSocketDir creates the socket's directory if it is missing and opens
// it, refusing one whose owner or permissions let others replace the
// socket.
func openSocketDir(path string) (int, error) {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return -1, fmt.Errorf("broker: socket directory: %w", err)
	}
	dir, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("broker: socket directory %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(dir, &st); err != nil {
		unix.Close(dir)
		return -1, fmt.Errorf("broker: socket directory %s: %w", path, err)
	}
	switch {
	case st.Uid != 0 && int(st.Uid) != os.Geteuid():
		err = fmt.Errorf("broker: socket directory %s is owned by uid %d, neither root nor the broker's user, who could replace the socket; use a directory of root's or the broker's", path, st.Uid)
	case st.Mode&0o002 != 0 && st.Mode&unix.S_ISVTX == 0:
		err = fmt.Errorf("broker: socket directory %s can be written by every user and has no sticky bit, so anyone could replace the socket; remove write permission for others (chmod o-w) or set the sticky bit (chmod +t)", path)
	}
	if err != nil {
		unix.Close(dir)
		return -1, err
	}
	return dir, nil
}

// checkStale makes sure that what is at name in dir, if anything, may be
// replaced: a socket nobody listens on. It looks at the entry itself, never
// through a symbolic link, and probes the very socket it looked at. It does
// not remove it: the rename that puts the new socket in place replaces it.
func checkStale(dir int, name, path string) error {
	fd, err := unix.Openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("broker: socket path %s: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("broker: socket path %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("broker: %s exists and is not a socket; refusing to replace it", path)
	}
	c, err := net.DialTimeout("unix", procPath(fd), time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("broker: another process is listening on %s; refusing to replace it", path)
	}
	if !errors.Is(err, unix.ECONNREFUSED) {
		return fmt.Errorf("broker: probing existing socket %s: %w", path, err)
	}
	return nil
}

// bindPrivate binds a socket in a new directory that only the broker's user
// can enter, made in dir and named after the socket, and returns the
// listener and the directory, open, and its name. Whoever can write dir can
// remove that directory, or rename it and put something else in its place,
// before the socket is bound in it (once it holds the socket, it can be
// renamed, which changes nothing, but not removed). Then a directory is made
// anew: they can delay the start, as they could by removing the socket, but
// the socket is only ever bound in a directory of the broker's.
func bindPrivate(dir int, name, path string) (*net.UnixListener, int, string, error) {
	var lastErr error
	for range privateDirAttempts {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, -1, "", fmt.Errorf("broker: private socket directory: %w", err)
		}
		privName := "." + name + "." + hex.EncodeToString(b[:])
		if err := unix.Mkdirat(dir, privName, 0o700); err != nil {
			if errors.Is(err, unix.EEXIST) {
				lastErr = err
				continue
			}
			return nil, -1, "", fmt.Errorf("broker: private socket directory: %w", err)
		}
		priv, err := openPrivateDir(dir, privName)
		if err != nil {
			lastErr = err
			continue
		}
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: procPath(priv) + "/" + socketName, Net: "unix"})
		if err != nil {
			var st unix.Stat_t
			removed := errors.Is(err, unix.ENOENT) && unix.Fstat(priv, &st) == nil && st.Nlink == 0
			removePrivateDir(dir, privName, priv)
			unix.Close(priv)
			if removed {
				lastErr = err
				continue
			}
			if errors.Is(err, unix.ENOENT) {
				return nil, -1, "", fmt.Errorf("broker: listen on %s: binding through /proc/self/fd, which needs /proc: %w", path, err)
			}
			return nil, -1, "", fmt.Errorf("broker: listen on %s: %w", path, err)
		}
		ln.SetUnlinkOnClose(false)
		return ln, priv, privName, nil
	}
	return nil, -1, "", fmt.Errorf("broker: listen on %s: the private directory for the socket was removed or replaced %d times, the last: %w", path, privateDirAttempts, lastErr)
}

// openPrivateDir opens the private directory privName just made in dir,
// and checks that it is still a directory of the broker's user that nobody
// else can enter — not a link or someone else's directory put in its place.
func openPrivateDir(dir int, privName string) (int, error) {
	fd, err := unix.Openat(dir, privName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("%s: %w", privName, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w", privName, err)
	}
	if int(st.Uid) != os.Geteuid() || st.Mode&0o077 != 0 {
		unix.Close(fd)
		return -1, fmt.Errorf("%s was replaced by a directory of uid %d, mode %04o", privName, st.Uid, st.Mode&0o7777)
	}
	return fd, nil
}

// removePrivateDir removes the private directory if it is still at its name;
// one renamed away is left where it was put (empty, and the broker's).
func removePrivateDir(dir int, privName string, priv int) {
	var ours, there unix.Stat_t
	if unix.Fstat(priv, &ours) != nil || unix.Fstatat(dir, privName, &there, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return
	}
	if ours.Dev == there.Dev && ours.Ino == there.Ino {
		_ = unix.Unlinkat(dir, privName, unix.AT_REMOVEDIR)
	}
}

// procPath names the file open as fd through /proc/self/fd: binding a
// socket there creates it in the directory fd refers to, and connecting
// there reaches the socket fd refers to, whatever happened to their paths.
func procPath(fd int) string {
	return "/proc/self/fd/" + strconv.Itoa(fd)
}
