// Command upstream is the quickstart's demo upstream: the API that the
// broker's http injection listener forwards to, standing in for a partner's
// API that wants a bearer token. It answers every request with what it
// received — the method, the path and the Authorization header — with the
// credential masked past its first characters, so that the quickstart shows
// the broker adding the header on the way out without printing the secret
// a second time.
//
//	upstream -listen 127.0.0.1:0 -addr-file FILE
//
// It writes the address it listens on to -addr-file (atomically, once
// listening), so that scripts/quickstart.sh needs no fixed port, and serves
// until SIGINT or SIGTERM.
//
//	upstream -call unix:///PATH/api.sock /hello
//
// With -call it is a client instead, for machines without curl: it sends
// GET to the path over the Unix socket (or http://HOST:PORT) and prints the
// answer.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// shown is how many characters of a credential the upstream echoes; the
// rest is masked.
const shown = 4

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		os.Exit(1)
	}
}

// run parses the flags and serves, or calls with -call.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "TCP address to listen on")
	addrFile := fs.String("addr-file", "", "write the address listened on to this file")
	call := fs.String("call", "", "instead of serving, GET the path given as argument from this address (unix:///path or http://host:port) and print the answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *call != "" {
		if fs.NArg() != 1 {
			return fmt.Errorf("-call %s: give the path to GET as the one argument", *call)
		}
		return get(ctx, *call, fs.Arg(0), stdout)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
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
	srv := &http.Server{Handler: http.HandlerFunc(echo), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// echo answers a request with its method, path and masked Authorization.
func echo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "demo upstream received: %s %s\n", r.Method, r.URL.RequestURI())
	fmt.Fprintf(w, "  Authorization: %s\n", mask(r.Header.Get("Authorization")))
}

// mask returns an Authorization value with its credential masked: the
// scheme, if any, then the credential's first characters and how many
// more there are. It never returns more than shown characters of the
// credential.
func mask(v string) string {
	if v == "" {
		return "(none)"
	}
	scheme, cred, ok := strings.Cut(v, " ")
	if !ok {
		scheme, cred = "", v
	} else {
		scheme += " "
	}
	r := []rune(cred)
	if len(r) <= shown {
		return fmt.Sprintf("%s%s (%d characters, too short to show any)", scheme, strings.Repeat("*", len(r)), len(r))
	}
	return fmt.Sprintf("%s%s%s (%d characters; all but the first %d masked)", scheme, string(r[:shown]), strings.Repeat("*", 8), len(r), shown)
}

// get sends GET path to addr (unix:///path or http://host:port) and
// copies the answer to stdout.
func get(ctx context.Context, addr, path string, stdout io.Writer) error {
	client := &http.Client{Timeout: time.Minute}
	url := addr + path
	if sock, ok := strings.CutPrefix(addr, "unix://"); ok {
		client.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}
		url = "http://upstream" + path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(stdout, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return nil
}

// writeAtomic writes content to path through a temporary file in the same
// directory, so that a reader sees the whole content or no file.
func writeAtomic(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}
