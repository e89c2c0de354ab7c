package sinks

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// tmpSuffix ends the name of a temporary file, ".<base>.<random>.credbroker-tmp",
// so that one a killed renderer left behind is recognised and removed.
const tmpSuffix = ".credbroker-tmp"

// file is where a sink writes, and how.
type file struct {
	path     string
	mode     os.FileMode
	uid, gid int // -1: the process's
}

// current is what is at the file's path now.
type current struct {
	exists  bool
	content []byte // nil when unreadable
	// matches reports whether it is a regular file with the wanted mode,
	// owner and group.
	matches bool
}

// read returns what is at the path, reading at most MaxFileBytes. A
// symbolic link is not followed; a FIFO or device is not read. Whatever
// cannot be read (a link, no permission, an I/O error) exists with unknown
// content.
func (f *file) read() current {
	fd, err := os.OpenFile(f.path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return current{}
	case err != nil:
		return current{exists: true}
	}
	defer fd.Close()
	fi, err := fd.Stat()
	if err != nil {
		return current{exists: true}
	}
	cur := current{exists: true, matches: fi.Mode().IsRegular() && fi.Mode().Perm() == f.mode}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		cur.matches = cur.matches && (f.uid < 0 || int(st.Uid) == f.uid) && (f.gid < 0 || int(st.Gid) == f.gid)
	}
	if !fi.Mode().IsRegular() || fi.Size() > MaxFileBytes {
		return cur
	}
	b, err := io.ReadAll(io.LimitReader(fd, MaxFileBytes+1))
	if err == nil && len(b) <= MaxFileBytes {
		cur.content = b
	}
	return cur
}

// same reports whether the file already holds content with the wanted
// metadata.
func (c current) same(content []byte) bool {
	return c.matches && c.content != nil && bytes.Equal(c.content, content)
}

// write replaces the file with content atomically: a temporary file in the
// same directory, created with the final mode (so never wider), given its
// owner and group before any byte is written, written and synced, then
// renamed over the path, and the directory synced so the rename survives a
// crash. On failure the temporary file is removed and the old file stays.
func (f *file) write(content []byte) (err error) {
	dir, base := filepath.Split(f.path)
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(dir, "."+base+"."+hex.EncodeToString(rnd[:])+tmpSuffix)
	t, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, f.mode)
	if err != nil {
		return fmt.Errorf("creating a temporary file beside %s: %w", f.path, unwrapPath(err))
	}
	closed := false
	defer func() {
		if err != nil {
			if !closed {
				t.Close()
			}
			os.Remove(tmp)
		}
	}()
	if f.uid >= 0 || f.gid >= 0 {
		if err := t.Chown(f.uid, f.gid); err != nil {
			return fmt.Errorf("giving %s owner %d and group %d: %w (another owner needs root or CAP_CHOWN)", f.path, f.uid, f.gid, unwrapPath(err))
		}
	}
	// The umask may have narrowed the mode; chown may have cleared bits.
	if err := t.Chmod(f.mode); err != nil {
		return fmt.Errorf("setting the mode of %s: %w", f.path, unwrapPath(err))
	}
	if _, err := t.Write(content); err != nil {
		return fmt.Errorf("writing %s: %w", f.path, unwrapPath(err))
	}
	if err := t.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", f.path, unwrapPath(err))
	}
	closed = true
	if err := t.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", f.path, unwrapPath(err))
	}
	if err := os.Rename(tmp, f.path); err != nil {
		return fmt.Errorf("replacing %s: %w", f.path, unwrapPath(err))
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, unwrapPath(err))
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, unwrapPath(err))
	}
	return nil
}

// removeStale removes temporary files of this path that a killed renderer
// left behind (they may hold a secret).
func (f *file) removeStale() error {
	dir, base := filepath.Split(f.path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("listing %s: %w", dir, unwrapPath(err))
	}
	prefix := "." + base + "."
	var errs []error
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, prefix) && strings.HasSuffix(n, tmpSuffix) && len(n) == len(prefix)+16+len(tmpSuffix) {
			if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// unwrapPath drops an *fs.PathError's operation and path, which the
// caller's message already names more plainly.
func unwrapPath(err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		return pe.Err
	case errors.As(err, &le):
		return le.Err
	}
	return err
}
