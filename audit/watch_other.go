//go:build !linux

package audit

// watcher would wake Follow when the log changes; without inotify it never
// does, and Follow polls.
type watcher struct{}

func newWatcher(string) *watcher { return &watcher{} }

// changed is never ready.
func (*watcher) changed() <-chan struct{} { return nil }

func (*watcher) close() {}
