package audit

import (
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// watcher wakes Follow when the database or its WAL changes: an inotify
// watch on their directory, whose events name the file they concern, so
// that writes to the shared-memory index (which readers make too, Follow
// included) and to other files beside the log wake nothing.
type watcher struct {
	f    *os.File // the inotify descriptor, non-blocking, so Close ends a Read
	wake chan struct{}
	done chan struct{}
}

// newWatcher watches the directory of path. Without inotify (a limit
// reached, a kernel without it) it returns a watcher that never wakes, and
// Follow polls.
func newWatcher(path string) *watcher {
	w := &watcher{wake: make(chan struct{}, 1), done: make(chan struct{})}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		close(w.done)
		return w
	}
	const mask = unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_CREATE | unix.IN_DELETE |
		unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(path), mask); err != nil {
		unix.Close(fd)
		close(w.done)
		return w
	}
	w.f = os.NewFile(uintptr(fd), "inotify")
	base := filepath.Base(path)
	go w.run(map[string]bool{base: true, base + "-wal": true})
	return w
}

// run reads events until the descriptor is closed, waking Follow for each
// batch that names one of names or concerns the directory itself.
func (w *watcher) run(names map[string]bool) {
	defer close(w.done)
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return
		}
		if touches(buf[:n], names) {
			select {
			case w.wake <- struct{}{}:
			default: // a wake is pending already
			}
		}
	}
}

// touches reports whether a batch of inotify events names one of names or
// concerns the watched directory itself (no name: it was moved or deleted).
func touches(b []byte, names map[string]bool) bool {
	for len(b) >= unix.SizeofInotifyEvent {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&b[0]))
		end := unix.SizeofInotifyEvent + int(ev.Len)
		if end > len(b) {
			return true // a torn batch the kernel does not write; read again
		}
		name := b[unix.SizeofInotifyEvent:end]
		for len(name) > 0 && name[len(name)-1] == 0 {
			name = name[:len(name)-1]
		}
		if len(name) == 0 || names[string(name)] || ev.Mask&unix.IN_Q_OVERFLOW != 0 {
			return true
		}
		b = b[end:]
	}
	return false
}

// changed is ready when the log may have changed since the last receive.
func (w *watcher) changed() <-chan struct{} { return w.wake }

// close stops the watch and waits for its reader to end.
func (w *watcher) close() {
	if w.f != nil {
		w.f.Close()
	}
	<-w.done
}
