package audit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// fileID identifies a file independently of its path: the device and inode
// it lives at.
type fileID struct {
	dev, ino uint64
}

// idOf returns the identity of a file from its FileInfo.
func idOf(fi fs.FileInfo) fileID {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}
}

// errMoved is the cause when the audit database or its WAL is no longer at
// its path: unlinked, renamed, replaced, or its volume unmounted.
var errMoved = errors.New("not the file opened at start-up")

// openedFiles are the database and WAL files the writer's connection has
// open. Before every commit, and whenever readiness is asked, both paths
// must still name these very files: a commit into a file that is no longer
// at its path would be lost to every reader and to the next start.
type openedFiles struct {
	db, wal         fileID
	dbPath, walPath string
}

// What to do when the database or the WAL is gone from its path.
const (
	remedyDB  = "restore it"
	remedyWAL = "restore it, or restart credbroker, which folds the rows it holds into the database"
)

// check reports, wrapping errMoved, a path that no longer names its file.
func (f *openedFiles) check() error {
	if err := checkPath(f.dbPath, "database", remedyDB, f.db); err != nil {
		return err
	}
	return checkPath(f.walPath, "write-ahead log", remedyWAL, f.wal)
}

// checkPath reports, wrapping errMoved, when path no longer names the file
// want: what names the file in the message, remedy says what to do.
func checkPath(path, what, remedy string, want fileID) error {
	id, err := statID(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("the audit %s %s is gone (deleted, moved, or its volume unmounted): %w; %s", what, path, errMoved, remedy)
	case err != nil:
		return fmt.Errorf("the audit %s %s cannot be checked: %w", what, path, err)
	case id != want:
		return fmt.Errorf("the file at %s is %w of the audit %s (it was replaced, or its volume remounted); restore the original", path, errMoved, what)
	}
	return nil
}

// removeStaleTemps removes the temporary files a crash may have left beside
// path while it was being replaced (see writeTemp).
func removeStaleTemps(path string) {
	if path == "" {
		return
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+escapeGlob(filepath.Base(path))+".tmp*"))
	for _, m := range matches {
		if fi, err := os.Lstat(m); err == nil && fi.Mode().IsRegular() {
			os.Remove(m)
		}
	}
}

// escapeGlob escapes the characters filepath.Match treats specially.
func escapeGlob(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', '\\':
			out = append(out, '\\')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// checkKeyFile refuses a key file that others could read or replace: it
// must be a regular file (a symbolic link to one, as in a Kubernetes secret
// volume, is followed) owned by the broker's user with no group or other
// permissions.
func checkKeyFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("audit: key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("audit: key file %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("audit: key file %s is owned by uid %d, not by uid %d that credbroker runs as; chown it to the broker's user", path, st.Uid, os.Geteuid())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("audit: key file %s has mode %04o: group and others must have no access to the audit keys; chmod 600 it", path, perm)
	}
	return nil
}
