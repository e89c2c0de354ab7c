package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
)

// The durable floor: the bare server, but every request first commits one
// record durably (loadgen -serve-bare SOCKET -durable DIR). It is the
// floor of one decision committed alone, measured as one process doing
// both, because on a virtual machine the sum of the bare server's figures
// and the fsync floor's understates it: while a thread is blocked in
// fsync the vCPU idles, and every wake-up after it (the reply, the
// client's next request) costs more than in a tight loop of either.

// DurableConfig describes the durable server's commits.
type DurableConfig struct {
	// Dir is where the temporary file goes: the directory of the audit
	// database, so that the commits are made on the same filesystem.
	Dir string
	// Records says how each request's record is written and synced.
	Records
}

// durableLog commits one record per request, one at a time: a request
// whose record is being written and synced makes the next wait for the
// mutex, so there is one write and one sync per request, never shared.
type durableLog struct {
	mu       sync.Mutex
	ff       *floorFile
	sync     string // fsync or fdatasync
	commits  int64  // records written and synced
	failures int64  // requests answered 500
	firstErr error
}

// newDurableLog creates and preallocates the durable server's file in
// cfg.Dir (see DurableConfig); remove removes it.
func newDurableLog(cfg DurableConfig) (*durableLog, error) {
	if cfg.Dir == "" {
		return nil, errors.New("durable server: a directory is required")
	}
	cfg.Records = cfg.Records.withDefaults()
	ff, err := cfg.Records.create(cfg.Dir, ".loadgen-durable-*")
	if err != nil {
		return nil, fmt.Errorf("durable server: %w", err)
	}
	return &durableLog{ff: ff, sync: cfg.Sync}, nil
}

// commit writes and syncs one record, under the mutex.
func (d *durableLog) commit() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ff.commit(); err != nil {
		d.failures++
		if d.firstErr == nil {
			d.firstErr = err
		}
		return err
	}
	d.commits++
	return nil
}

// counts returns the records committed, the failed requests and the first
// failure.
func (d *durableLog) counts() (commits, failures int64, first error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.commits, d.failures, d.firstErr
}

// name is the path of the file.
func (d *durableLog) name() string { return d.ff.f.Name() }

// remove closes and removes the file.
func (d *durableLog) remove() error { return d.ff.remove() }

// handler commits a record, then answers as bareHandler(body) does; a
// record that could not be written or synced is answered 500, so that the
// load generator counts an error rather than a success. logw gets the
// first failure.
func (d *durableLog) handler(body []byte, logw io.Writer) http.Handler {
	reply := bareHandler(body)
	var logged sync.Once
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := d.commit(); err != nil {
			logged.Do(func() {
				fmt.Fprintf(logw, "loadgen: durable server: %v (the first failure; each is answered 500)\n", err)
			})
			http.Error(w, `{"error":{"code":"durable_write_failed"}}`, http.StatusInternalServerError)
			return
		}
		reply.ServeHTTP(w, r)
	})
}

// serveDurable serves the durable floor on ln until ctx is done: replies
// of size bytes, as serveBare's, each preceded by one record of d written
// and synced. It removes d's file before it returns, whatever happened;
// logw gets the file's name, the first failure and, at the end, the
// counts.
func serveDurable(ctx context.Context, ln net.Listener, size int, d *durableLog, logw io.Writer) (err error) {
	defer func() {
		if rerr := d.remove(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("durable server: %w", rerr))
		}
		commits, failures, _ := d.counts()
		fmt.Fprintf(logw, "loadgen: durable server: %d records written and synced, %d failed; removed %s\n", commits, failures, d.name())
	}()
	body, err := bareBody(size)
	if err != nil {
		ln.Close()
		return err
	}
	fmt.Fprintf(logw, "loadgen: durable server: one %d-byte write and %s per request in %s (%d bytes preallocated)\n",
		len(d.ff.buf), d.sync, d.name(), d.ff.size)
	return serveHandler(ctx, ln, d.handler(body, logw), "durable server")
}
