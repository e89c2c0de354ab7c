// Command httpbench is the upstream of scripts/bench-http.sh: a plain
// HTTP/1.1 server on TCP loopback that answers every request with the same
// small body, keep-alive, until SIGTERM.
//
//	httpbench -listen 127.0.0.1:0 -reply-size 64 -token-file TOKEN -addr-file ADDR
//
// It writes the address it listens on to -addr-file (atomically, once
// listening) so that the script needs no fixed port. With -token-file, a
// request is answered 200 only when it carries no Authorization header
// (the direct target) or exactly "Bearer <token>" (HAProxy and the broker,
// which set it); any other Authorization gets 401, which wrk counts as a
// non-2xx reply, so a relay that failed to inject the header is seen. At
// exit it prints how many requests came with the header and without it,
// and how many were refused; the token itself is never printed.
//
//	httpbench -relay http://UPSTREAM -token-file TOKEN -listen 127.0.0.1:0 -addr-file ADDR
//
// With -relay it answers nothing itself: it is the gorelay target, a bare
// httputil.ReverseProxy to UPSTREAM that replaces Authorization and
// Proxy-Authorization with "Authorization: Bearer <token>" (relay.go), and
// at exit prints how many requests it relayed and how many failed.
package main

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpbench:", err)
		os.Exit(1)
	}
}

// Config is the server's configuration.
type Config struct {
	// ReplySize is the body's length in bytes (default 64).
	ReplySize int
	// Token, when not empty, is the only Authorization accepted, as
	// "Bearer <Token>"; requests without the header are accepted too.
	Token string
}

// Counts are what a Handler has answered.
type Counts struct {
	WithHeader, WithoutHeader, Refused atomic.Int64
}

// Handler answers every request with cfg.ReplySize bytes, counting it in c.
func Handler(cfg Config, c *Counts) http.Handler {
	body := bytes.Repeat([]byte("x"), cfg.ReplySize)
	length := strconv.Itoa(len(body))
	want := []byte("Bearer " + cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Drain the request body so that the connection is reused.
		_, _ = io.Copy(io.Discard, r.Body)
		got := r.Header.Values("Authorization")
		switch {
		case len(got) == 0:
			c.WithoutHeader.Add(1)
		case cfg.Token != "" && len(got) == 1 && subtle.ConstantTimeCompare([]byte(got[0]), want) == 1:
			c.WithHeader.Add(1)
		case cfg.Token == "":
			c.WithHeader.Add(1)
		default:
			c.Refused.Add(1)
			http.Error(w, "httpbench: unexpected Authorization", http.StatusUnauthorized)
			return
		}
		h := w.Header()
		h["Content-Type"] = []string{"text/plain"}
		h["Content-Length"] = []string{length}
		_, _ = w.Write(body)
	})
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("httpbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "TCP address to listen on")
	addrFile := fs.String("addr-file", "", "write the address listened on to this file")
	tokenFile := fs.String("token-file", "", "file holding the token expected in \"Authorization: Bearer <token>\" (with -relay: the token to set)")
	relay := fs.String("relay", "", "relay to this upstream URL (http://HOST:PORT), setting \"Authorization: Bearer <token>\" from -token-file, instead of answering")
	var cfg Config
	fs.IntVar(&cfg.ReplySize, "reply-size", 64, "reply body size in bytes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.ReplySize < 0 {
		return fmt.Errorf("-reply-size %d: want ≥ 0", cfg.ReplySize)
	}
	if *relay != "" {
		replySize := false
		fs.Visit(func(f *flag.Flag) { replySize = replySize || f.Name == "reply-size" })
		if replySize {
			return errors.New("-reply-size is the upstream's: not with -relay")
		}
		if *tokenFile == "" {
			return errors.New("-relay needs -token-file")
		}
	}
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		cfg.Token = string(bytes.TrimSpace(b))
		if cfg.Token == "" {
			return fmt.Errorf("token: %s is empty", *tokenFile)
		}
	}
	if *relay != "" {
		return runRelay(ctx, *relay, cfg.Token, *listen, *addrFile, stderr)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	if *addrFile != "" {
		if err := writeAtomic(*addrFile, ln.Addr().String()+"\n"); err != nil {
			return err
		}
	}
	var c Counts
	srv := &http.Server{Handler: Handler(cfg, &c), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	fmt.Fprintf(stderr, "httpbench: %d requests with the expected Authorization, %d without, %d refused\n",
		c.WithHeader.Load(), c.WithoutHeader.Load(), c.Refused.Load())
	return nil
}

// runRelay serves a Relay to upstream on listen until ctx ends.
func runRelay(ctx context.Context, upstream, token, listen, addrFile string, stderr io.Writer) error {
	r, err := NewRelay(upstream, token, log.New(stderr, "httpbench: ", log.LstdFlags))
	if err != nil {
		return err
	}
	defer r.Close()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	if addrFile != "" {
		if err := writeAtomic(addrFile, ln.Addr().String()+"\n"); err != nil {
			return err
		}
	}
	srv := r.Server()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	fmt.Fprintln(stderr, r.Summary())
	return nil
}

// writeAtomic writes content to path through a temporary file and a
// rename, so that a reader never sees it half written.
func writeAtomic(path, content string) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".addr-*")
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), path)
}
