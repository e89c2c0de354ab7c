//go:build linux

package listener

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode"

	"golang.org/x/sys/unix"
)

// connPair returns the two ends of one connection over network ("tcp" on
// loopback or "unix").
func connPair(t *testing.T, network string) (a, b net.Conn) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "s")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	a, err = net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { a.Close(); r.c.Close() })
	return a, r.c
}

// session is a relayed session: the app's end, the upstream server's end,
// and the relay's result.
type session struct {
	app, server net.Conn
	polled      bool
	done        chan struct{}
}

// relaySession relays between two fresh connections over network, the
// way a listener does after its login.
func relaySession(t *testing.T, ctx context.Context, network string) *session {
	t.Helper()
	app, clientSide := connPair(t, network)
	upSide, server := connPair(t, network)
	s := &session{app: app, server: server, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.polled = pollRelay(ctx, clientSide, upSide)
	}()
	return s
}

// send writes data to w.
func send(w net.Conn, data []byte, errs chan<- error) {
	_, err := w.Write(data)
	errs <- err
}

// receive reads n bytes from r.
func receive(r net.Conn, n int, into *[]byte, errs chan<- error) {
	*into = make([]byte, n)
	_, err := io.ReadFull(r, *into)
	errs <- err
}

// Both directions at once, far more than the kernel's buffers hold, with
// the server not reading until the relay has had to keep bytes back: the
// event loop relays every byte, in order, holding its source while the
// other side has no room.
func TestPollRelayBothWays(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			held := make(chan struct{})
			var once sync.Once
			hook := func() { once.Do(func() { close(held) }) }
			testHookPending.Store(&hook)
			t.Cleanup(func() { testHookPending.Store(nil) })

			s := relaySession(t, context.Background(), network)
			up := make([]byte, 32<<20)
			down := make([]byte, 8<<20)
			rand.Read(up)
			rand.Read(down)
			errs := make(chan error, 4)
			go send(s.app, up, errs)
			go send(s.server, down, errs)

			var got [2][]byte
			go receive(s.app, len(down), &got[1], errs)
			<-held // the server has read nothing: the relay had to wait for room
			go receive(s.server, len(up), &got[0], errs)
			for range 4 {
				if err := <-errs; err != nil {
					t.Fatalf("write or read: %v", err)
				}
			}
			s.app.Close()
			if sha256.Sum256(got[0]) != sha256.Sum256(up) || len(got[0]) != len(up) {
				t.Errorf("the server got %d bytes that differ from the %d the app sent", len(got[0]), len(up))
			}
			if !bytes.Equal(got[1], down) {
				t.Errorf("the app got %d bytes that differ from the %d the server sent", len(got[1]), len(down))
			}
			<-s.done
			if !s.polled {
				t.Fatal("pollRelay declined two plain sockets")
			}
		})
	}
}

// When the app hangs up, the server sees the end of its stream and the
// relay returns; what the app sent before is delivered first.
func TestPollRelayEnds(t *testing.T) {
	s := relaySession(t, context.Background(), "tcp")
	if _, err := s.app.Write([]byte("terminate")); err != nil {
		t.Fatal(err)
	}
	s.app.Close()
	got, err := io.ReadAll(s.server)
	if err != nil || string(got) != "terminate" {
		t.Fatalf("the server read %q, %v; want what the app sent, then the end", got, err)
	}
	<-s.done
	if !s.polled {
		t.Fatal("pollRelay declined two plain sockets")
	}
}

// Cancelling the relay's context cuts the session: both ends see it end
// and the relay returns.
func TestPollRelayCut(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s := relaySession(t, ctx, "unix")
	if _, err := s.app.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s.server, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("the server read %q, %v", buf, err)
	}
	cancel()
	<-s.done
	for name, c := range map[string]net.Conn{"app": s.app, "server": s.server} {
		if n, err := c.Read(buf); err == nil {
			t.Errorf("%s read %d bytes after the cut; want the end of the stream", name, n)
		}
	}
}

// Many sessions share the loops; each gets its own bytes.
func TestPollRelaySessions(t *testing.T) {
	const n = 40
	sessions := make([]*session, n)
	for i := range sessions {
		sessions[i] = relaySession(t, context.Background(), "tcp")
	}
	var wg sync.WaitGroup
	for i, s := range sessions {
		wg.Go(func() {
			msg := []byte{byte(i), 'q'}
			for range 100 {
				if _, err := s.app.Write(msg); err != nil {
					t.Error(err)
					return
				}
				got := make([]byte, 2)
				if _, err := io.ReadFull(s.server, got); err != nil || !bytes.Equal(got, msg) {
					t.Errorf("session %d: server read %q, %v", i, got, err)
					return
				}
				got[1] = 'r'
				if _, err := s.server.Write(got); err != nil {
					t.Error(err)
					return
				}
				if _, err := io.ReadFull(s.app, got); err != nil || got[0] != byte(i) || got[1] != 'r' {
					t.Errorf("session %d: app read %q, %v", i, got, err)
					return
				}
			}
			s.app.Close()
			<-s.done
		})
	}
	wg.Wait()
	for i, s := range sessions {
		if !s.polled {
			t.Errorf("session %d was not relayed by a loop", i)
		}
	}
}

// There is a loop per P the runtime had and the runtime has one P beyond
// them, and sessions are spread evenly over the loops. (The sessions
// start on goroutines of their own, so the hook's calls may come in any
// order: the test counts them per loop.)
func TestLoopsPerP(t *testing.T) {
	got := make(chan *pollLoop, 8)
	added := func(l *pollLoop) { got <- l }
	testHookAdd.Store(&added)
	t.Cleanup(func() { testHookAdd.Store(nil) })
	var sessions []*session
	for range 4 {
		sessions = append(sessions, relaySession(t, context.Background(), "unix"))
	}
	seen := map[*pollLoop]int{}
	for range sessions {
		seen[<-got]++
	}
	n := len(pollLoops.loops)
	if procs := runtime.GOMAXPROCS(0); n+1 != procs {
		t.Errorf("%d loops with GOMAXPROCS %d; want one P beyond the loops", n, procs)
	}
	if want := min(n, len(sessions)); len(seen) != want {
		t.Errorf("%d sessions went to %d of %d loops; want %d", len(sessions), len(seen), n, want)
	}
	for _, k := range seen {
		if lo, hi := len(sessions)/n, (len(sessions)+n-1)/n; k < lo || k > hi {
			t.Errorf("a loop got %d of %d sessions over %d loops; want %d to %d", k, len(sessions), n, lo, hi)
		}
	}
	for _, s := range sessions {
		s.app.Close()
		<-s.done
	}
}

// When there are as many loops as CPUs the process may run on, each
// loop's thread is bound to a CPU of its own and is SCHED_BATCH, as the
// kernel reports the thread; otherwise no loop is bound.
func TestLoopsBoundToCPUs(t *testing.T) {
	// A round trip on a session per loop: every loop has run.
	var sessions []*session
	for range 2 * runtime.NumCPU() { // at least a session per loop, sessions alternating
		s := relaySession(t, context.Background(), "unix")
		sessions = append(sessions, s)
		got := make([]byte, 1)
		if _, err := s.app.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s.server, got); err != nil || got[0] != 'x' {
			t.Fatalf("server read %q, %v", got, err)
		}
	}
	if _, err := nextLoop(); err != nil { // synchronizes with the loops' start
		t.Fatal(err)
	}
	loops := pollLoops.loops
	cpus := loopCPUs(len(loops))
	t.Logf("%d loops; CPUs for them: %v", len(loops), cpus)
	bound := map[int]bool{}
	for i, l := range loops {
		if cpus == nil {
			if l.cpu != -1 || l.tid.Load() != 0 {
				t.Errorf("loop %d bound to CPU %d with %d loops and other CPUs allowed", i, l.cpu, len(loops))
			}
			continue
		}
		if l.cpu != cpus[i] || bound[l.cpu] {
			t.Errorf("loop %d: CPU %d; want %d, each loop its own", i, l.cpu, cpus[i])
		}
		bound[l.cpu] = true
		status, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/status", l.tid.Load()))
		if err != nil {
			t.Fatalf("loop %d: its thread: %v", i, err)
		}
		m := regexp.MustCompile(`(?m)^Cpus_allowed_list:\s*(\S+)$`).FindSubmatch(status)
		if m == nil {
			t.Fatalf("loop %d: no Cpus_allowed_list in its thread's status", i)
		}
		if string(m[1]) != strconv.Itoa(l.cpu) {
			t.Errorf("loop %d: thread %d may run on CPUs %s; want CPU %d only", i, l.tid.Load(), m[1], l.cpu)
		}
		attr, err := unix.SchedGetAttr(int(l.tid.Load()), 0)
		if err != nil {
			t.Fatalf("loop %d: sched_getattr: %v", i, err)
		}
		if attr.Policy != unix.SCHED_BATCH {
			t.Errorf("loop %d: thread %d has scheduling policy %d; want SCHED_BATCH (%d)", i, l.tid.Load(), attr.Policy, unix.SCHED_BATCH)
		}
	}
	for _, s := range sessions {
		s.app.Close()
		<-s.done
	}
}

// loopCPUs gives CPUs only for as many loops as the process has CPUs.
func TestLoopCPUsCount(t *testing.T) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	n := set.Count()
	if got := loopCPUs(n); len(got) != n {
		t.Errorf("loopCPUs(%d) = %v on %d CPUs; want all of them", n, got, n)
	}
	for _, c := range loopCPUs(n) {
		if !set.IsSet(c) {
			t.Errorf("loopCPUs gave CPU %d, which the process may not use", c)
		}
	}
	if got := loopCPUs(n + 1); got != nil {
		t.Errorf("loopCPUs(%d) on %d CPUs = %v; want none", n+1, n, got)
	}
}

// upperFilter sends the client's bytes upstream in upper case and refuses
// the stream at a '!'; a stream ending after a '-' ends inside a message.
type upperFilter struct{ open bool }

var errBang = errors.New("bang")

func (f *upperFilter) Feed(out, in []byte) ([]byte, error) {
	for _, c := range in {
		if c == '!' {
			return out, errBang
		}
		f.open = c == '-'
		out = append(out, byte(unicode.ToUpper(rune(c))))
	}
	return out, nil
}

func (f *upperFilter) End() error {
	if f.open {
		return io.ErrUnexpectedEOF
	}
	return io.EOF
}

func (f *upperFilter) Refusal(err error) []byte { return []byte("refused: " + err.Error()) }

// filteredSession relays between fresh TCP connections through an
// upperFilter.
func filteredSession(t *testing.T) (s *session, err *error) {
	t.Helper()
	app, clientSide := connPair(t, "tcp")
	upSide, server := connPair(t, "tcp")
	s = &session{app: app, server: server, done: make(chan struct{})}
	err = new(error)
	go func() {
		defer close(s.done)
		s.polled, *err = RelayFiltered(context.Background(), clientSide, upSide, &upperFilter{})
	}()
	return s, err
}

// A filtered session: the client's bytes arrive rewritten; when the
// client's stream ends cleanly the upstream sees its end but its replies
// still reach the client, until it closes.
func TestRelayFilteredCleanEnd(t *testing.T) {
	s, rerr := filteredSession(t)
	if _, err := s.app.Write([]byte("get a")); err != nil {
		t.Fatal(err)
	}
	if err := s.app.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(s.server) // to the end: the relay shut the upstream's writing side
	if err != nil || string(got) != "GET A" {
		t.Fatalf("the server read %q, %v; want GET A, then the end", got, err)
	}
	if _, err := s.server.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	s.server.Close()
	got, err = io.ReadAll(s.app)
	if err != nil || string(got) != "reply" {
		t.Fatalf("the app read %q, %v; want the reply sent after its end, then the end", got, err)
	}
	<-s.done
	if !s.polled || *rerr != nil {
		t.Fatalf("RelayFiltered = %v, %v; want true, nil", s.polled, *rerr)
	}
}

// A refused stream: what went before the refusal reaches the upstream,
// its replies reach the client, then the refusal, then the end.
func TestRelayFilteredRefusal(t *testing.T) {
	s, rerr := filteredSession(t)
	if _, err := s.app.Write([]byte("ok!never")); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(s.server)
	if err != nil || string(got) != "OK" {
		t.Fatalf("the server read %q, %v; want OK, then the end", got, err)
	}
	if _, err := s.server.Write([]byte("+done;")); err != nil {
		t.Fatal(err)
	}
	s.server.Close()
	got, _ = io.ReadAll(s.app)
	if string(got) != "+done;refused: bang" {
		t.Fatalf("the app read %q; want the reply, then the refusal", got)
	}
	<-s.done
	if !errors.Is(*rerr, errBang) {
		t.Fatalf("RelayFiltered's error = %v, want the refusal", *rerr)
	}
}

// A stream that ends inside a message ends the session at once.
func TestRelayFilteredCutShort(t *testing.T) {
	s, rerr := filteredSession(t)
	if _, err := s.app.Write([]byte("set-")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s.server, buf); err != nil || string(buf) != "SET-" {
		t.Fatalf("the server read %q, %v", buf, err)
	}
	s.app.Close()
	<-s.done
	if !errors.Is(*rerr, io.ErrUnexpectedEOF) {
		t.Fatalf("RelayFiltered's error = %v, want io.ErrUnexpectedEOF", *rerr)
	}
	if n, err := s.server.Read(buf); err == nil {
		t.Fatalf("the server read %d bytes after the session ended", n)
	}
}

// The pacer: a loop that has never had traffic, or none for quietAfter,
// waits without limit; otherwise it yields before a wait once
// yieldEvery has passed since its last yield, and no wait outlasts
// waitBound after that yield.
func TestPacer(t *testing.T) {
	var p pacer
	t0 := time.Unix(1_000_000, 0)
	type want struct {
		yield   bool
		timeout int
	}
	check := func(at time.Duration, w want) {
		t.Helper()
		if y, to := p.next(t0.Add(at)); y != w.yield || to != w.timeout {
			t.Errorf("next at +%v = (%v, %d), want (%v, %d)", at, y, to, w.yield, w.timeout)
		}
	}
	check(0, want{false, -1}) // never had traffic
	p.ready = true
	check(0, want{true, 8})
	check(time.Millisecond, want{false, 7})
	check(3500*time.Microsecond, want{false, 4})
	check(yieldEvery, want{true, 8})
	check(quietAfter-time.Nanosecond, want{true, 8}) // nothing since +0
	check(quietAfter, want{false, -1})
	check(quietAfter+time.Hour, want{false, -1})
	p.ready = true
	check(quietAfter+time.Hour+time.Millisecond, want{true, 8})
	check(2*quietAfter+time.Hour+time.Millisecond, want{false, -1})

	// Any run of waits: each ends by its last yield + waitBound, and only a
	// loop quiet for quietAfter waits without limit.
	p = pacer{}
	rng := mathrand.New(mathrand.NewPCG(1, 2))
	now := t0
	var lastYield, lastReady time.Time
	for i := range 100_000 {
		now = now.Add(time.Duration(rng.Int64N(int64(3 * waitBound))))
		yield, timeout := p.next(now)
		if yield {
			lastYield = now
		}
		if timeout < 0 {
			if now.Sub(lastReady) < quietAfter {
				t.Fatalf("wait %d: no limit %v after traffic", i, now.Sub(lastReady))
			}
		} else if end := now.Add(time.Duration(timeout) * time.Millisecond); end.Sub(lastYield) > waitBound {
			t.Fatalf("wait %d: ends %v after the last yield, want at most %v", i, end.Sub(lastYield), waitBound)
		}
		if rng.IntN(1000) == 0 { // traffic, now and then
			p.ready, lastReady = true, now
		}
	}
}

// A loop goes on waiting with a limit after traffic, without one once it
// has been quiet for quietAfter, and with one again from the next bytes,
// which still reach it there.
func TestLoopQuietThenTraffic(t *testing.T) {
	// changes: the kind of each wait (true: without limit) that differs
	// from the one before, once armed, on the session's loop (the others
	// may still be winding down from earlier tests). The hook runs on the
	// loops only.
	changes := make(chan bool, 64)
	var armed atomic.Bool
	var mine atomic.Pointer[pollLoop]
	added := func(l *pollLoop) { mine.Store(l) }
	testHookAdd.Store(&added)
	t.Cleanup(func() { testHookAdd.Store(nil) })
	known, last := false, false
	hook := func(l *pollLoop, timeout int) {
		if !armed.Load() || l != mine.Load() {
			return
		}
		unlimited := timeout < 0
		if known && unlimited == last {
			return
		}
		known, last = true, unlimited
		changes <- unlimited
	}
	testHookWait.Store(&hook)
	t.Cleanup(func() { testHookWait.Store(nil) })

	s := relaySession(t, context.Background(), "tcp")
	exchange := func(msg string) {
		t.Helper()
		if _, err := s.app.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(s.server, buf); err != nil || string(buf) != msg {
			t.Fatalf("the server read %q, %v; want %q", buf, err, msg)
		}
	}
	exchange("before")
	// From here until quietAfter has passed every wait has a limit.
	armed.Store(true)
	for i, want := range []bool{false, true} {
		if got := <-changes; got != want {
			t.Fatalf("wait kind %d after traffic: without limit %v, want %v", i, got, want)
		}
	}
	exchange("after")
	if got := <-changes; got {
		t.Fatal("the wait after new traffic has no limit")
	}
	s.app.Close()
	<-s.done
}
