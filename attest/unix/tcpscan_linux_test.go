//go:build linux

package unix

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest"
)

// Attestations that ask while a scan of /proc/*/fd runs wait for the next
// scan, which looks for all their sockets at once. Each still gets the
// process holding its own socket (this process for three of them, a
// helper for one, one socket asked about twice), and one that stops
// waiting returns at once.
func TestAttestTCPSharedScan(t *testing.T) { forEachLookup(t, testAttestTCPSharedScan) }

func testAttestTCPSharedScan(t *testing.T, lookup string) {
	exe := selfExe(t)
	sum := fileSHA256(t, exe)
	a := newAttestor(t, Config{TCPLookup: lookup})
	ln := listenTCP(t, "127.0.0.1:0")
	own := []net.Conn{selfTCP(t, ln), selfTCP(t, ln), selfTCP(t, ln)}
	helper := startTCPPeer(t, ln, "", exe, "hold", nil)

	started := make(chan int, 10) // the number of sockets each scan looks for
	release := make(chan struct{})
	scans := 0
	a.testHookScan = func(sockets int) { // called by one goroutine at a time
		scans++
		started <- sockets
		if scans == 1 {
			<-release
		}
	}
	type result struct {
		id  attest.Identity
		err error
	}
	attestAsync := func(ctx context.Context, c net.Conn) chan result {
		ch := make(chan result, 1)
		go func() {
			id, err := a.AttestTCP(ctx, c)
			ch <- result{id, err}
		}()
		return ch
	}

	first := attestAsync(context.Background(), own[0])
	if n := <-started; n != 1 {
		t.Fatalf("the first scan looks for %d sockets, want 1", n)
	}
	// The first scan is held: these wait for the next one.
	waiting := []chan result{
		attestAsync(context.Background(), own[1]),
		attestAsync(context.Background(), own[2]),
		attestAsync(context.Background(), helper.conn),
	}
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := attestAsync(ctx, own[1])
	queued := func() int {
		a.scans.mu.Lock()
		defer a.scans.mu.Unlock()
		if a.scans.next == nil {
			return 0
		}
		return len(a.scans.next.want)
	}
	for deadline := time.Now().Add(helperTimeout); queued() < 3; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d sockets queued for the next scan, want 3", queued())
		}
	}
	cancel()
	r := <-gaveUp
	wantReason(t, r.id, r.err, reasonCancelled)

	close(release)
	r = <-first
	if r.err != nil {
		t.Fatal(r.err)
	}
	checkTCPIdentity(t, r.id, os.Getuid(), os.Getgid(), os.Getpid(), exe, sum)
	if n := <-started; n != 3 {
		t.Fatalf("the second scan looks for %d sockets, want 3", n)
	}
	for i, ch := range waiting {
		r := <-ch
		if r.err != nil {
			t.Fatalf("attestation %d: %v", i, r.err)
		}
		pid := os.Getpid()
		if i == 2 {
			pid = helper.cmd.Process.Pid
		}
		checkTCPIdentity(t, r.id, os.Getuid(), os.Getgid(), pid, exe, sum)
	}
	if n := a.scanned.Load(); n != 2 {
		t.Errorf("%d scans of /proc, want 2", n)
	}
}
