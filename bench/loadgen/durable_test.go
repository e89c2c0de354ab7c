package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// durableFiles returns the durable server's files in dir.
func durableFiles(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, ".loadgen-durable-*"))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// startDurable serves the durable floor with d until the test ends, and
// checks at the end that d's file is gone.
func startDurable(t *testing.T, d *durableLog, size int, logw io.Writer) string {
	t.Helper()
	// Registered before startServer's cleanup, so run after it: the server
	// has stopped and removed its file.
	name := d.name()
	t.Cleanup(func() {
		if _, err := os.Stat(name); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after the server stopped: %v, want it removed", name, err)
		}
	})
	return startServer(t, func(ctx context.Context, path string) error {
		ln, err := listenUnix(path)
		if err != nil {
			return errors.Join(err, d.remove())
		}
		return serveDurable(ctx, ln, size, d, logw)
	})
}

// Every request is one record written and synced, one at a time, before a
// reply of the bare server's size; the file is preallocated while serving
// and removed after.
func TestDurableServer(t *testing.T) {
	dir := t.TempDir()
	// A small file, so that the records wrap around in it.
	d, err := newDurableLog(DurableConfig{Dir: dir, Records: Records{Prealloc: 3 * defaultWriteSize}})
	if err != nil {
		t.Fatal(err)
	}
	var syncs, inSync, overlaps atomic.Int64
	realSync := d.ff.sync
	d.ff.sync = func(f *os.File) error {
		if inSync.Add(1) > 1 {
			overlaps.Add(1)
		}
		defer inSync.Add(-1)
		syncs.Add(1)
		time.Sleep(100 * time.Microsecond) // widen the window for an overlap
		return realSync(f)
	}
	var logw syncBuffer
	sock := startDurable(t, d, 233, &logw)

	files := durableFiles(t, dir)
	if len(files) != 1 || files[0] != d.name() {
		t.Fatalf("files in %s while serving: %q, want %s", dir, files, d.name())
	}
	if fi, err := os.Stat(files[0]); err != nil || fi.Size() != 3*defaultWriteSize {
		t.Fatalf("%s: %v, size %d, want %d bytes preallocated", files[0], err, fi.Size(), 3*defaultWriteSize)
	}

	res := measure(t, Config{Socket: sock, Clients: 4, Duration: 100 * time.Millisecond, Warmup: 10 * time.Millisecond},
		func(r *Result) bool { return r.OK > 0 })
	t.Log(formatLine(res))
	if res.Errors != 0 || res.WarmupErrors != 0 {
		t.Fatalf("errors=%d warmup_errors=%d (first %q)", res.Errors, res.WarmupErrors, res.FirstError)
	}
	// Replies are all in: one record per request, none shared, none
	// concurrent with another.
	commits, failures, _ := d.counts()
	if commits != res.TotalRequests || syncs.Load() != commits || failures != 0 {
		t.Errorf("%d requests, %d records committed, %d syncs, %d failures: want one record and one sync per request",
			res.TotalRequests, commits, syncs.Load(), failures)
	}
	if n := overlaps.Load(); n > 0 {
		t.Errorf("%d syncs overlapped another: want one at a time", n)
	}
	// The last record is at the offset before the next write, with its
	// sequence number: the writes advance and wrap inside the file.
	d.mu.Lock()
	last := d.ff.off - defaultWriteSize
	b := make([]byte, 8)
	_, err = d.ff.f.ReadAt(b, last)
	d.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint64(b); got != uint64(commits) {
		t.Errorf("record at %d has sequence %d, want %d", last, got, commits)
	}

	// The reply is the bare server's.
	w, err := newWorker(t.Context(), &Config{Socket: sock, Path: "/v1/credentials/demo"}, new(atomic.Int64))
	if err != nil {
		t.Fatal(err)
	}
	defer w.tr.CloseIdleConnections()
	resp, err := w.tr.RoundTrip(w.req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(body) != 233 || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("reply %d: %d bytes, headers %v", resp.StatusCode, len(body), resp.Header)
	}
}

// A record that cannot be written or synced is answered 500, never 200,
// and the load generator counts it as an error.
func TestDurableFailure(t *testing.T) {
	for _, fault := range []string{"write", "sync"} {
		t.Run(fault, func(t *testing.T) {
			d, err := newDurableLog(DurableConfig{Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			injected := errors.New("injected " + fault + " failure")
			switch fault {
			case "write":
				d.ff.writeAt = func([]byte, int64) (int, error) { return 0, injected }
			case "sync":
				d.ff.sync = func(*os.File) error { return injected }
			}
			var logw syncBuffer
			sock := startDurable(t, d, 233, &logw)
			res := measure(t, Config{Socket: sock, Clients: 2, Duration: 50 * time.Millisecond, Warmup: 0},
				func(r *Result) bool { return r.Errors > 0 })
			if res.OK != 0 || res.StatusErrors["500"] != res.Errors {
				t.Fatalf("ok=%d errors by status %v: want only 500s", res.OK, res.StatusErrors)
			}
			commits, failures, first := d.counts()
			if commits != 0 || failures != res.TotalRequests || !errors.Is(first, injected) {
				t.Errorf("%d committed, %d failed of %d requests, first %v: want every one failed with %v", commits, failures, res.TotalRequests, first, injected)
			}
			if !strings.Contains(logw.String(), injected.Error()) {
				t.Errorf("log %q lacks the failure", logw.String())
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// loadgen -serve-bare SOCKET -durable DIR: the file is in DIR, preallocated,
// while the server runs, and removed when it stops; the flags that make no
// sense are refused.
func TestDurableFlags(t *testing.T) {
	dir := t.TempDir()
	sockDir, err := os.MkdirTemp("", "loadgen")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "d.sock")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr syncBuffer
	errc := make(chan error, 1)
	go func() {
		errc <- mainErr(ctx, []string{"-serve-bare", sock, "-reply-size", "233", "-durable", dir, "-prealloc", "65536"}, io.Discard, &stderr)
	}()
	for deadline := time.Now().Add(hangBound); ; {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-errc:
			t.Fatalf("server exited: %v; %s", err, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket in %v", hangBound)
		}
	}
	// The file is ready before the socket appears.
	files := durableFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("files in %s while serving: %q, want one", dir, files)
	}
	if fi, err := os.Stat(files[0]); err != nil || fi.Size() != 65536 {
		t.Fatalf("%s: %v, %+v: want 65536 bytes", files[0], err, fi)
	}
	res := measure(t, Config{Socket: sock, Clients: 1, Duration: 20 * time.Millisecond}, func(r *Result) bool { return r.OK > 0 })
	if res.Errors != 0 {
		t.Fatalf("errors: %s", formatLine(res))
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("server: %v; %s", err, stderr.String())
	}
	assertEmpty(t, dir)
	for _, want := range []string{"durable server on " + sock, "one 4120-byte write and fsync per request", "records written and synced, 0 failed; removed"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, stderr.String())
		}
	}

	for _, args := range [][]string{
		{"-durable", dir},
		{"-serve-bare", sock, "-durable", filepath.Join(dir, "missing")},
		{"-serve-bare", sock, "-durable", dir, "-write-size", "0"},
		{"-serve-bare", sock, "-durable", dir, "-write-size", "8192", "-prealloc", "4096"},
		{"-serve-bare", sock, "-durable", dir, "-sync", "none"},
		{"-serve-bare", sock, "-fsync-floor", dir},
	} {
		if err := mainErr(t.Context(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	assertEmpty(t, dir)
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket %s left behind: %v", sock, err)
	}
}
