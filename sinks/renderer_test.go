package sinks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/credbroker/credbroker/client"
	"github.com/credbroker/credbroker/internal/logtest"
)

// fakeBroker stands in for the broker's socket API where a test scripts
// replies and failures and counts fetches; cmd/credbroker's render tests
// run the same Renderer against the real broker binary.
type fakeBroker struct {
	mu    sync.Mutex
	creds map[string]*client.Credential
	err   error
	gets  map[string]int
}

func newFakeBroker(creds ...*client.Credential) *fakeBroker {
	b := &fakeBroker{creds: map[string]*client.Credential{}, gets: map[string]int{}}
	for _, c := range creds {
		b.creds[c.Name] = c
	}
	return b
}

func (b *fakeBroker) Get(_ context.Context, name string) (*client.Credential, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gets[name]++
	if b.err != nil {
		return nil, b.err
	}
	c, ok := b.creds[name]
	if !ok {
		return nil, &client.Error{Code: client.CodeNotFound, Message: fmt.Sprintf("credential %q is not configured", name), Status: 404}
	}
	return c, nil
}

// set makes c the credential served, or err the answer.
func (b *fakeBroker) set(c *client.Credential, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c != nil {
		b.creds[c.Name] = c
	}
	b.err = err
}

func (b *fakeBroker) count(name string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gets[name]
}

// clock is a Renderer's time, advanced by the test: each wait the
// renderer starts is sent on waits, and ends when the test calls fire.
type clock struct {
	mu    sync.Mutex
	now   time.Time
	waits chan time.Duration
	wake  chan time.Time
	done  chan struct{}
}

func newClock() *clock {
	return &clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), waits: make(chan time.Duration), wake: make(chan time.Time), done: make(chan struct{})}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) After(d time.Duration) <-chan time.Time {
	select {
	case c.waits <- d:
	case <-c.done:
	}
	return c.wake
}

// nextWait returns the wait the renderer started.
func (c *clock) nextWait(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-c.waits:
		return d
	case <-time.After(time.Minute):
		t.Fatal("the renderer started no wait")
		return 0
	}
}

// fire advances the time by d and ends the wait.
func (c *clock) fire(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	c.wake <- c.now
}

func (c *clock) hooks() Hooks {
	return Hooks{Now: c.Now, After: c.After, Jitter: func(d time.Duration) time.Duration { return d }}
}

func credentialAt(now time.Time, password string, ttl time.Duration) *client.Credential {
	return &client.Credential{Name: "db", Kind: "static", Data: map[string]string{"password": password}, ExpiresAt: now.Add(ttl), LeaseID: "l", DecisionID: "d"}
}

// counter returns an on_change command that appends a line to a file, and
// a function counting its lines.
func counter(t *testing.T) ([]string, func() int) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "count")
	return []string{"/bin/sh", "-c", `echo "$CREDBROKER_SINK_PATH $CREDBROKER_SINK_CREDENTIAL" >> ` + f}, func() int {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "\n")
	}
}

// started runs r in the background; the returned function stops it and
// checks that Run returned nil and left no goroutine behind.
func started(t *testing.T, r *Renderer, c *clock) func() {
	t.Helper()
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() {
		t.Helper()
		cancel()
		close(c.done)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run() = %v, want nil on cancellation", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("Run did not return after cancellation")
		}
		expectGoroutines(t, before)
	}
}

func expectGoroutines(t *testing.T, before int) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); runtime.NumGoroutine() > before; {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRunRefreshesAtHalfLife(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	fb := newFakeBroker(credentialAt(c.Now(), "one", 10*time.Minute))
	cmd, changes := counter(t)
	logs := &logtest.Buffer{}
	r, err := New(Options{
		Sinks:   []Config{{Credential: "db", Path: filepath.Join(dir, "db.env"), Template: "P={{.password}}\n", OnChange: cmd}},
		Fetcher: fb, Logger: logs.Logger(), Hooks: c.hooks(),
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := started(t, r, c)
	defer stop()

	if d := c.nextWait(t); d != 5*time.Minute {
		t.Errorf("first wait %v, want half the 10m lifetime", d)
	}
	if got := readFile(t, filepath.Join(dir, "db.env")); got != "P=one\n" || changes() != 1 {
		t.Fatalf("file %q after %d changes, want P=one after 1", got, changes())
	}
	// Same content: nothing written, on_change not run.
	fb.set(credentialAt(c.Now().Add(5*time.Minute), "one", 10*time.Minute), nil)
	c.fire(5 * time.Minute)
	if d := c.nextWait(t); d != 5*time.Minute {
		t.Errorf("wait %v, want 5m", d)
	}
	if changes() != 1 {
		t.Errorf("on_change ran %d times for unchanged content, want once in all", changes())
	}
	// New content: written, on_change once.
	fb.set(credentialAt(c.Now().Add(5*time.Minute), "two", 4*time.Second), nil)
	c.fire(5 * time.Minute)
	if d := c.nextWait(t); d != 2*time.Second {
		t.Errorf("wait %v, want half the 4s lifetime", d)
	}
	if got := readFile(t, filepath.Join(dir, "db.env")); got != "P=two\n" || changes() != 2 {
		t.Fatalf("file %q after %d changes, want P=two after 2", got, changes())
	}
	// A credential about to expire is fetched again no sooner than MinRefresh.
	fb.set(credentialAt(c.Now(), "two", 10*time.Millisecond), nil)
	c.fire(2 * time.Second)
	if d := c.nextWait(t); d != MinRefresh {
		t.Errorf("wait %v, want MinRefresh", d)
	}
	if n := fb.count("db"); n != 4 {
		t.Errorf("%d fetches, want 4", n)
	}
	if strings.Contains(logs.String(), "one") && strings.Contains(logs.String(), "P=") {
		t.Errorf("the log shows file content:\n%s", logs)
	}
}

func TestFailureKeepsFileAndBacksOff(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	fb := newFakeBroker(credentialAt(c.Now(), canary, time.Hour))
	logs := &logtest.Buffer{}
	path := filepath.Join(dir, "db.env")
	r, err := New(Options{Sinks: []Config{{Credential: "db", Path: path, Template: "{{.password}}"}}, Fetcher: fb, Logger: logs.Logger(), Hooks: c.hooks()})
	if err != nil {
		t.Fatal(err)
	}
	stop := started(t, r, c)
	defer stop()
	if d := c.nextWait(t); d != 30*time.Minute {
		t.Fatalf("wait %v, want 30m", d)
	}
	fb.set(nil, &client.Error{Code: client.CodeDenied, Message: "no policy allows unix:uid:0 to read db", DecisionID: "d-9", Status: 403})
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute}
	for i, w := range want {
		c.fire(time.Hour) // past the old credential's expiry too
		if d := c.nextWait(t); d != w {
			t.Errorf("wait after failure %d: %v, want %v", i+1, d, w)
		}
		if got := readFile(t, path); got != canary {
			t.Fatalf("after a failed fetch the file holds %q, want its previous content", got)
		}
	}
	if !strings.Contains(logs.String(), "no policy allows unix:uid:0 to read db") || !strings.Contains(logs.String(), "retry_in=1s") {
		t.Errorf("the log does not give the broker's reason and the retry:\n%s", logs)
	}
	// Recovered: back to half-life waits, the failure count reset.
	fb.set(credentialAt(c.Now().Add(time.Minute), "new", time.Hour), nil)
	c.fire(time.Minute)
	if d := c.nextWait(t); d != 30*time.Minute {
		t.Errorf("wait after recovery %v, want 30m", d)
	}
	if got := readFile(t, path); got != "new" {
		t.Errorf("file %q after recovery, want new", got)
	}
	fb.set(nil, fmt.Errorf("%w at /x: connect: connection refused", client.ErrUnreachable))
	c.fire(30 * time.Minute)
	if d := c.nextWait(t); d != time.Second {
		t.Errorf("wait after a new failure %v, want the backoff to start again at 1s", d)
	}
	if strings.Contains(logs.String(), canary) {
		t.Errorf("the log holds the secret:\n%s", logs)
	}
}

func TestDefaultJitter(t *testing.T) {
	h := Hooks{}.withDefaults()
	for range 1000 {
		if d := h.Jitter(time.Second); d < time.Second/2 || d > time.Second {
			t.Fatalf("jitter of 1s gave %v, want between 0.5s and 1s", d)
		}
	}
}

func TestSinksOfOneCredentialShareAFetch(t *testing.T) {
	dir := t.TempDir()
	fb := newFakeBroker(credentialAt(time.Now(), "pw", time.Hour), &client.Credential{Name: "api", Data: map[string]string{"value": "tok"}})
	r, err := New(Options{Sinks: []Config{
		{Credential: "db", Path: filepath.Join(dir, "a"), Template: "a={{.password}}"},
		{Credential: "api", Path: filepath.Join(dir, "b"), Template: "b={{.value}}"},
		{Credential: "db", Path: filepath.Join(dir, "c"), Template: "c={{.password}}"},
	}, Fetcher: fb})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := r.RenderOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if fb.count("db") != 3 || fb.count("api") != 3 {
		t.Errorf("fetches: db %d, api %d; want 3 each (one per round for both db sinks)", fb.count("db"), fb.count("api"))
	}
	for name, want := range map[string]string{"a": "a=pw", "b": "b=tok", "c": "c=pw"} {
		if got := readFile(t, filepath.Join(dir, name)); got != want {
			t.Errorf("%s holds %q, want %q", name, got, want)
		}
	}
}

func TestOnChangeEnvironment(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, "env")
	path := filepath.Join(dir, "db.env")
	r, err := New(Options{Sinks: []Config{{Credential: "db", Path: path, Template: "{{.password}}",
		OnChange: []string{"/bin/sh", "-c", "env > " + envFile + "; echo to-stdout; echo to-stderr >&2", "ignored-$0"}}},
		Fetcher: newFakeBroker(credentialAt(time.Now(), canary, time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RenderOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	env := readFile(t, envFile)
	for _, want := range []string{EnvPath + "=" + path + "\n", EnvCredential + "=db\n", "PATH="} {
		if !strings.Contains(env, want) {
			t.Errorf("on_change's environment lacks %q:\n%s", want, env)
		}
	}
	if strings.Contains(env, canary) {
		t.Errorf("on_change's environment holds the secret")
	}
}

func TestOnChangeOutputAndFailure(t *testing.T) {
	dir := t.TempDir()
	out := &logtest.Buffer{}
	logs := &logtest.Buffer{}
	r, err := New(Options{Sinks: []Config{
		{Credential: "db", Path: filepath.Join(dir, "a"), Template: "{{.password}}", OnChange: []string{"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}},
		{Credential: "db", Path: filepath.Join(dir, "b"), Template: "{{.password}}", OnChange: []string{"/bin/sleep", "60"}},
		{Credential: "db", Path: filepath.Join(dir, "c"), Template: "{{.password}}", OnChange: []string{"no-such-command-credbroker"}},
	}, Fetcher: newFakeBroker(credentialAt(time.Now(), canary, time.Hour)), CommandOutput: out, Logger: logs.Logger(), CommandTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	err = r.RenderOnce(context.Background())
	for _, want := range []string{"a (credential db): on_change /bin/sh: exit status 3", "b (credential db): on_change /bin/sleep: killed after 100ms", `c (credential db): on_change: exec: "no-such-command-credbroker": executable file not found`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("RenderOnce() = %v, want %q in it", err, want)
		}
	}
	if got := out.String(); got != "out\nerr\n" {
		t.Errorf("command output %q, want its stdout and stderr", got)
	}
	for _, name := range []string{"a", "b", "c"} {
		if got := readFile(t, filepath.Join(dir, name)); got != canary {
			t.Errorf("%s holds %q although only its on_change failed", name, got)
		}
	}
	if !strings.Contains(logs.String(), "exit status 3") || strings.Contains(logs.String(), canary) {
		t.Errorf("log:\n%s", logs)
	}
}

func TestModeOwnerGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test gives files to nobody:nogroup, which needs root; the suite runs as root")
	}
	old := syscall.Umask(0o077) // the mode must not depend on it
	defer syscall.Umask(old)
	dir := t.TempDir()
	cmd, changes := counter(t)
	sinks := []Config{
		{Credential: "db", Path: filepath.Join(dir, "default"), Template: "x", OnChange: cmd},
		{Credential: "db", Path: filepath.Join(dir, "shared"), Template: "x", Mode: "0644", Owner: "nobody", Group: "nogroup", OnChange: cmd},
		{Credential: "db", Path: filepath.Join(dir, "numeric"), Template: "x", Mode: "440", Owner: "4242", Group: "4343"},
	}
	r, err := New(Options{Sinks: sinks, Fetcher: newFakeBroker(credentialAt(time.Now(), "pw", time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RenderOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	expect := func(name string, mode os.FileMode, uid, gid uint32) {
		t.Helper()
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != mode || st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: %v %d:%d, want %v %d:%d", name, fi.Mode(), st.Uid, st.Gid, mode, uid, gid)
		}
	}
	expect("default", 0o600, 0, 0)
	expect("shared", 0o644, 65534, 65534)
	expect("numeric", 0o440, 4242, 4343)
	// Someone changes the mode and owner: the next round restores them
	// without running on_change, as the content is the same.
	if err := os.Chmod(filepath.Join(dir, "shared"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(dir, "default"), 1, 1); err != nil {
		t.Fatal(err)
	}
	if err := r.RenderOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	expect("shared", 0o644, 65534, 65534)
	expect("numeric", 0o440, 4242, 4343)
	// Without owner and group, any owner is accepted.
	expect("default", 0o600, 1, 1)
	if changes() != 2 {
		t.Errorf("on_change ran %d times, want once for each of the 2 files with one", changes())
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.tmpl")
	if err := os.WriteFile(big, make([]byte, MaxTemplateBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.tmpl")
	if err := os.WriteFile(bad, []byte("{{.x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(Options{Sinks: []Config{
		{Credential: "db", Path: filepath.Join(dir, "a"), TemplateFile: filepath.Join(dir, "missing.tmpl")},
		{Credential: "db", Path: filepath.Join(dir, "b"), TemplateFile: big},
		{Credential: "db", Path: filepath.Join(dir, "c"), TemplateFile: bad},
		{Credential: "db", Path: filepath.Join(dir, "d"), Template: "x", Owner: "no-such-user-credbroker", Group: "no-such-group-credbroker"},
		{Credential: "db", Path: filepath.Join(dir, "a"), Template: "x"},
		{Credential: "db", Path: "relative", Template: "x"},
	}})
	for _, want := range []string{
		"a Fetcher is required",
		"sink 0 (" + dir + "/a): sinks: template_file: " + dir + "/missing.tmpl: no such file or directory",
		"sink 1 (" + dir + "/b): sinks: template_file: template is over 65536 bytes",
		"sink 2 (" + dir + "/c): sinks: template_file: template: bad.tmpl:1: unclosed action",
		`sinks: owner: "no-such-user-credbroker": no such user`,
		`sinks: group: "no-such-group-credbroker": no such group`,
		"sink 4: path " + dir + "/a is rendered by an earlier sink too",
		`sink 5 (relative): sinks: path: "relative" is not an absolute path`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New() = %v\nwant %q in it", err, want)
		}
	}
	if _, err := New(Options{Fetcher: newFakeBroker()}); err == nil || !strings.Contains(err.Error(), "no sinks") {
		t.Errorf("New without sinks = %v", err)
	}
}

func TestTemplateFile(t *testing.T) {
	dir := t.TempDir()
	tmpl := filepath.Join(dir, "db.tmpl")
	if err := os.WriteFile(tmpl, []byte("user={{.username}}\n{{.pasword}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := credentialAt(time.Now(), canary, time.Hour)
	c.Data["username"] = "app"
	path := filepath.Join(dir, "out")
	r, err := New(Options{Sinks: []Config{{Credential: "db", Path: path, TemplateFile: tmpl}}, Fetcher: newFakeBroker(c)})
	if err != nil {
		t.Fatal(err)
	}
	err = r.RenderOnce(context.Background())
	want := `sinks: ` + path + ` (credential db): template: template: db.tmpl:2:2: executing "db.tmpl" at <.pasword>: map has no entry for key "pasword" (credential "db" has expires_at, lease_id, password, username)`
	if err == nil || err.Error() != want {
		t.Errorf("RenderOnce() = %v\nwant %s", err, want)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed rendering wrote the file: %v", err)
	}
	expectNoTemporaries(t, dir)
}

// expectNoTemporaries checks that no temporary file is left in dir.
func expectNoTemporaries(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), tmpSuffix) {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestWriteFailureLeavesNoTemporary(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "db.env")
	// A directory at the path: the rename fails after the secret was
	// written to the temporary file.
	if err := os.MkdirAll(filepath.Join(path, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	r, err := New(Options{Sinks: []Config{{Credential: "db", Path: path, Template: "{{.password}}"}}, Fetcher: newFakeBroker(credentialAt(time.Now(), canary, time.Hour)), Logger: logs.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	err = r.RenderOnce(context.Background())
	if err == nil || !strings.Contains(err.Error(), "replacing "+path) {
		t.Errorf("RenderOnce() = %v, want the rename's failure", err)
	}
	expectNoTemporaries(t, dir)
	if !strings.Contains(logs.String(), "file not rendered") || strings.Contains(logs.String(), canary) {
		t.Errorf("log:\n%s", logs)
	}
	if strings.Contains(logs.String(), "retry_in") {
		t.Errorf("RenderOnce, which does not retry, logged a retry:\n%s", logs)
	}
}

func TestStaleTemporariesRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "db.env")
	stale := filepath.Join(dir, ".db.env.0123456789abcdef"+tmpSuffix)
	others := []string{filepath.Join(dir, ".db.env.short"+tmpSuffix), filepath.Join(dir, ".other.0123456789abcdef"+tmpSuffix), filepath.Join(dir, "db.env.bak")}
	for _, p := range append(others, stale) {
		if err := os.WriteFile(p, []byte(canary), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r, err := New(Options{Sinks: []Config{{Credential: "db", Path: path, Template: "{{.password}}"}}, Fetcher: newFakeBroker(credentialAt(time.Now(), "pw", time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RenderOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a killed renderer's temporary file is still there: %v", err)
	}
	for _, p := range others {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s, not this sink's temporary file, was removed: %v", p, err)
		}
	}
}

func TestSymlinkReplacedNotFollowed(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "db.env")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	cmd, changes := counter(t)
	r, err := New(Options{Sinks: []Config{{Credential: "db", Path: path, Template: "keep", OnChange: cmd}}, Fetcher: newFakeBroker(credentialAt(time.Now(), "pw", time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RenderOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Errorf("path is %v, %v; want a regular file of mode 0600", fi, err)
	}
	if got := readFile(t, target); got != "keep" {
		t.Errorf("the link's target was changed to %q", got)
	}
	if changes() != 1 {
		t.Errorf("on_change ran %d times, want once: the link was replaced by the file", changes())
	}
}

func TestUnchangedFileFromAnEarlierRun(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "db.env")
	if err := os.WriteFile(path, []byte("P=pw"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	cmd, changes := counter(t)
	r, err := New(Options{Sinks: []Config{{Credential: "db", Path: path, Template: "P={{.password}}", OnChange: cmd}}, Fetcher: newFakeBroker(credentialAt(time.Now(), "pw", time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RenderOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(path)
	if changes() != 0 || !os.SameFile(fi, after) {
		t.Errorf("a file already holding the content was rewritten (on_change ran %d times)", changes())
	}
}

func TestRunStopsDuringAFetch(t *testing.T) {
	blocked := make(chan struct{})
	f := FetcherFunc(func(ctx context.Context, _ string) (*client.Credential, error) {
		close(blocked)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	logs := &logtest.Buffer{}
	r, err := New(Options{Sinks: []Config{{Credential: "db", Path: filepath.Join(t.TempDir(), "x"), Template: "x"}}, Fetcher: f, Logger: logs.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	<-blocked
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	expectGoroutines(t, before)
	if strings.Contains(logs.String(), "failed") {
		t.Errorf("a fetch cut by shutdown was logged as a failure:\n%s", logs)
	}
}
