package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcprelay:", err)
		os.Exit(1)
	}
}

// run parses args, listens, and relays until ctx ends. The address goes
// to stdout once listening; the summary and dial failures to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tcprelay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "TCP address to listen on")
	upstream := fs.String("upstream", "", "TCP address (host:port) to relay every connection to; required")
	addrFile := fs.String("addr-file", "", "write the address listened on to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *upstream == "" {
		return errors.New("-upstream is required: the host:port to relay to")
	}
	if host, port, err := net.SplitHostPort(*upstream); err != nil || host == "" || port == "" {
		return fmt.Errorf("-upstream %q: want host:port", *upstream)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	addr := ln.Addr().String()
	if *addrFile != "" {
		if err := writeAtomic(*addrFile, addr+"\n"); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "tcprelay: listening on %s, relaying to %s\n", addr, *upstream)
	r := &Relay{Upstream: *upstream, Log: log.New(stderr, "tcprelay: ", log.LstdFlags)}
	err = r.Serve(ctx, ln)
	fmt.Fprintf(stderr, "tcprelay: %d connections relayed, %d closed because the upstream could not be dialled\n",
		r.Relayed(), r.DialFailed())
	return err
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
