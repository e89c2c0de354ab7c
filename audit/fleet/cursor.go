package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// cursor is how far the forwarder got: the newest row of the local log
// that the fleet store has committed, and the newest prune anchor sent. It
// lives in a file beside the log, replaced atomically after each batch the
// store committed. A cursor that lags (a crash between the store's commit
// and the file's replacement, a file restored from a backup) only makes
// rows be sent again, which the store ignores; a cursor ahead of the log,
// or naming a row the log no longer holds as it was, means the log was cut
// short or replaced (see Forwarder).
type cursor struct {
	// Install is the install whose rows the cursor counts.
	Install string `json:"install"`
	// Seq and Hash are the newest row the store has committed, 0 and ""
	// before the first; Hash is "" too when rows up to Seq were pruned
	// before they were sent and no prune anchor names its hash.
	Seq  int64  `json:"seq"`
	Hash string `json:"hash,omitempty"`
	// Anchor is the signature (hex) of the newest prune anchor sent, "" for
	// none.
	Anchor string `json:"anchor,omitempty"`
}

// maxCursorFile bounds how much of a cursor file is read.
const maxCursorFile = 4 << 10

// parseCursor parses a cursor file strictly: one JSON object with known
// fields, an install and a non-negative seq.
func parseCursor(data []byte) (cursor, error) {
	var c cursor
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		return cursor{}, err
	}
	if _, err := d.Token(); err != io.EOF {
		return cursor{}, errors.New("data after the object")
	}
	switch {
	case c.Install == "":
		return cursor{}, errors.New("no install")
	case c.Seq < 0:
		return cursor{}, fmt.Errorf("negative seq %d", c.Seq)
	}
	return c, nil
}

// readCursor reads the cursor file: the zero cursor when there is none.
// A file that cannot be parsed (a crash of the machine before it reached
// the disk) is reported and read as the zero cursor, so that every row is
// sent again rather than one lost.
func readCursor(path string) (cursor, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cursor{}, nil
	}
	if err != nil {
		return cursor{}, fmt.Errorf("audit/fleet: cursor file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCursorFile+1))
	if err != nil {
		return cursor{}, fmt.Errorf("audit/fleet: cursor file %s: %w", path, err)
	}
	c, err := parseCursor(data)
	if err != nil {
		return cursor{}, fmt.Errorf("%w: %s: %v", errBadCursor, path, err)
	}
	return c, nil
}

// errBadCursor marks a cursor file that cannot be parsed.
var errBadCursor = errors.New("audit/fleet: cursor file unreadable; forwarding every row again")

// cursorWriter replaces the cursor file after each batch. The rename is
// atomic, so a killed broker leaves the old cursor or the new one; the
// file and its directory are synced at most every syncEvery, so that the
// forwarder does not compete with the audit writer's fsyncs for the disk
// (a cursor lost to a power failure only makes rows be sent again).
type cursorWriter struct {
	path     string
	lastSync time.Time
	now      func() time.Time
}

// syncEvery is the most often the cursor file is synced.
const syncEvery = 5 * time.Second

// write replaces the cursor file with c.
func (w *cursorWriter) write(c cursor, force bool) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	data = append(data, '\n')
	sync := force || w.now().Sub(w.lastSync) >= syncEvery
	tmp, err := os.CreateTemp(filepath.Dir(w.path), "."+filepath.Base(w.path)+".tmp*")
	if err != nil {
		return fmt.Errorf("audit/fleet: cursor file: %w", err)
	}
	_, err = tmp.Write(data)
	if err == nil && sync {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), w.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("audit/fleet: cursor file %s: %w", w.path, err)
	}
	if sync {
		if d, err := os.Open(filepath.Dir(w.path)); err == nil {
			_ = d.Sync()
			d.Close()
		}
		w.lastSync = w.now()
	}
	return nil
}

// removeStaleTemps removes temporary files a crash left beside path.
func removeStaleTemps(path string) {
	m, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp*"))
	for _, f := range m {
		os.Remove(f)
	}
}
