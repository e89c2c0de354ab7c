package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// minReplySize is the size of the smallest body bareBody can build:
// {"pad":""} and a newline.
const minReplySize = 11

// bareBody returns a JSON object of exactly size bytes, ending in a newline
// as encoding/json's Encoder (and the broker) ends its replies.
func bareBody(size int) ([]byte, error) {
	if size < minReplySize {
		return nil, fmt.Errorf("reply size %d: must be at least %d bytes", size, minReplySize)
	}
	return []byte(`{"pad":"` + strings.Repeat("x", size-minReplySize) + "\"}\n"), nil
}

// bareHandler answers every request with body, with the headers the broker's
// socket API sets on a credential reply. The header slices are shared and
// never modified, so a reply allocates nothing here.
func bareHandler(body []byte) http.Handler {
	ctype := []string{"application/json"}
	clen := []string{strconv.Itoa(len(body))}
	cache := []string{"no-store"}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = ctype
		h["Content-Length"] = clen
		h["Cache-Control"] = cache
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	})
}

// listenUnix listens on path, replacing a stale socket file but refusing to
// replace one that something still answers on.
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("listen %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen %s: a server is already answering there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("listen %s: remove stale socket: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	return ln, nil
}

// serveBare serves a fixed reply of size bytes on ln until ctx is done, then
// shuts down gracefully. It returns nil on cancellation.
func serveBare(ctx context.Context, ln net.Listener, size int) error {
	body, err := bareBody(size)
	if err != nil {
		return err
	}
	return serveHandler(ctx, ln, bareHandler(body), "bare server")
}

// serveHandler serves h on ln until ctx is done, then shuts down
// gracefully; name prefixes its errors. It returns nil on cancellation.
func serveHandler(ctx context.Context, ln net.Listener, h http.Handler, name string) error {
	srv := &http.Server{Handler: h}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: %w", name, err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(shutCtx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("%s: shutdown: %w", name, err)
	}
	return nil
}
