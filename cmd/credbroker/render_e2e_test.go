package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// renderPolicies let root — the test, and render running in it — read demo
// and db for 2s at a time, so that render refreshes every second; forbidden
// is configured but allowed to nobody.
const renderPolicies = `policies:
  - name: root-renders
    effect: allow
    workloads: [{unix: {uid: 0}}]
    credentials: [demo, db]
    ttl: 2s
`

const renderCredentials = `  - {name: demo, static: {file: secrets/demo}}
  - {name: db, static: {fields: {username: {file: secrets/user}, password: {file: secrets/pw}}}}
  - {name: forbidden, static: {file: secrets/demo}}
`

// renderCanary is the prefix of every secret value of these tests, which
// must appear in the sink files only.
const renderCanary = "cb-canary-7f3a"

// newRenderEnv starts a broker with the render credentials and returns its
// environment and a directory for the sink files.
func newRenderEnv(t *testing.T) (*env, *brokerProc, string) {
	t.Helper()
	e := newEnv(t, renderPolicies, renderCredentials)
	e.writeSecret("secrets/demo", renderCanary+"-demo-0")
	e.writeSecret("secrets/user", "app")
	e.writeSecret("secrets/pw", renderCanary+"-pw")
	b := e.start()
	out := filepath.Join(e.dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	return e, b, out
}

// writeSecret replaces a secret's source file atomically, so that the
// broker never reads it half written.
func (e *env) writeSecret(name, value string) {
	e.t.Helper()
	tmp := e.write(name+".new", value+"\n")
	if err := os.Rename(tmp, filepath.Join(e.dir, name)); err != nil {
		e.t.Fatal(err)
	}
}

// renderFile writes a sinks file into the environment's directory.
func (e *env) renderFile(yaml string) string {
	return e.write("render.yaml", yaml)
}

// renderProc is `credbroker render` running in the test process, as the
// broker's caller: its decisions are the test process's (uid 0).
type renderProc struct {
	t      *testing.T
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan int
}

func startRender(t *testing.T, socket string, args ...string) *renderProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &renderProc{t: t, logs: &syncBuffer{}, cancel: cancel, done: make(chan int, 1)}
	c := &cli{stdin: strings.NewReader(""), stdout: p.logs, stderr: p.logs}
	go func() { p.done <- c.renderContext(ctx, append([]string{"--socket", socket}, args...)) }()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

// stop cancels render, as SIGTERM does, and returns its exit code.
func (p *renderProc) stop() int {
	p.t.Helper()
	p.cancel()
	select {
	case code := <-p.done:
		p.done <- code // for the cleanup
		return code
	case <-time.After(hangBound):
		p.t.Fatalf("render did not stop:\n%s", p.logs)
		return 0
	}
}

// waitLogCount waits until render has logged s at least n times.
func (p *renderProc) waitLogCount(s string, n int) {
	p.t.Helper()
	deadline := time.Now().Add(hangBound)
	for strings.Count(p.logs.String(), s) < n {
		if time.Now().After(deadline) {
			p.t.Fatalf("%q not logged %d times after %v:\n%s", s, n, hangBound, p.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitContent waits until the file at path holds want.
func waitContent(t *testing.T, path, want string, logs fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(hangBound)
	for {
		b, _ := os.ReadFile(path)
		if string(b) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %q after %v, want %q; render's log:\n%s", path, b, hangBound, want, logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lines counts the lines of a file, 0 when it does not exist.
func lines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// reader reads a file over and over until stopped, recording every
// distinct content and any read that was not a whole rendering.
type reader struct {
	stopc chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	reads int
	seen  map[string]bool
	bad   []string
}

func startReader(path string, whole *regexp.Regexp) *reader {
	r := &reader{stopc: make(chan struct{}), done: make(chan struct{}), seen: map[string]bool{}}
	go func() {
		defer close(r.done)
		for {
			select {
			case <-r.stopc:
				return
			default:
			}
			b, err := os.ReadFile(path)
			r.mu.Lock()
			r.reads++
			switch {
			case err != nil:
				r.bad = append(r.bad, err.Error())
			case !whole.Match(b):
				r.bad = append(r.bad, fmt.Sprintf("%q", b))
			default:
				r.seen[string(b)] = true
			}
			r.mu.Unlock()
		}
	}()
	return r
}

// waitSeen waits until the reader has read content.
func (r *reader) waitSeen(t *testing.T, content string) {
	t.Helper()
	deadline := time.Now().Add(hangBound)
	for {
		r.mu.Lock()
		seen := r.seen[content]
		r.mu.Unlock()
		if seen {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reader did not read %q in %v", content, hangBound)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *reader) stop() {
	close(r.stopc)
	<-r.done
}

// TestRenderKeepsFilesFresh runs render against the real broker with a 2s
// policy ttl: files re-rendered on rotation and atomically replaced under a
// reader, on_change once per distinct content and never for an unchanged
// one, a failed fetch keeping the old file and logged without the secret,
// and no secret anywhere but the sink files.
func TestRenderKeepsFilesFresh(t *testing.T) {
	e, b, out := newRenderEnv(t)
	counter := filepath.Join(e.dir, "changes")
	demo, db := filepath.Join(out, "demo.env"), filepath.Join(out, "db.env")
	cfg := e.renderFile(fmt.Sprintf(`sinks:
  - credential: demo
    path: out/demo.env
    template: "DEMO={{.value}}\n"
    on_change: [/bin/sh, -c, 'echo "$CREDBROKER_SINK_PATH" >> %s']
  - credential: db
    path: out/db.env
    template: "user={{.username}}\npassword={{shellquote .password}}\n"
`, counter))
	p := startRender(t, e.socket, "--config", cfg, "--log-format", "text", "--log-level", "debug")
	waitContent(t, demo, "DEMO="+renderCanary+"-demo-0\n", p.logs)
	waitContent(t, db, "user=app\npassword='"+renderCanary+"-pw'\n", p.logs)

	rd := startReader(demo, regexp.MustCompile(`^DEMO=`+renderCanary+`-demo-(\d+|back)\n$`))
	const rotations = 4 // the loop below names them 1 … 4
	for i := 1; i <= rotations; i++ {
		e.writeSecret("secrets/demo", fmt.Sprintf("%s-demo-%d", renderCanary, i))
		want := fmt.Sprintf("DEMO=%s-demo-%d\n", renderCanary, i)
		waitContent(t, demo, want, p.logs)
		rd.waitSeen(t, want) // the reader runs during every re-render
	}
	// Refreshes that find the same content change nothing.
	unchanged := `msg="file unchanged" path=` + demo
	p.waitLogCount(unchanged, strings.Count(p.logs.String(), unchanged)+2)
	if n := lines(t, counter); n != rotations+1 {
		t.Errorf("on_change ran %d times for %d distinct contents", n, rotations+1)
	}

	// The source disappears: the broker cannot issue, the file stays.
	if err := os.Remove(filepath.Join(e.dir, "secrets/demo")); err != nil {
		t.Fatal(err)
	}
	p.waitLogCount(`msg="fetching the credential failed; its files are left as they were" retry_in=`, 2)
	if got, _ := os.ReadFile(demo); string(got) != fmt.Sprintf("DEMO=%s-demo-%d\n", renderCanary, rotations) {
		t.Errorf("after failed fetches the file holds %q", got)
	}
	if !strings.Contains(p.logs.String(), "503 unavailable") {
		t.Errorf("the failure does not give the broker's answer:\n%s", p.logs)
	}
	e.writeSecret("secrets/demo", renderCanary+"-demo-back")
	waitContent(t, demo, "DEMO="+renderCanary+"-demo-back\n", p.logs)
	p.waitLogCount(`msg="on_change ran" path=`+demo, rotations+2) // it runs once the file is written
	rd.waitSeen(t, "DEMO="+renderCanary+"-demo-back\n")
	rd.stop()
	p.waitLogCount(unchanged, strings.Count(p.logs.String(), unchanged)+1)

	if code := p.stop(); code != 0 {
		t.Errorf("render stopped with exit %d, want 0", code)
	}
	if n := lines(t, counter); n != rotations+2 {
		t.Errorf("on_change ran %d times for %d distinct contents", n, rotations+2)
	}
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if len(rd.bad) > 0 {
		t.Errorf("%d of %d reads saw no whole file, such as %s", len(rd.bad), rd.reads, rd.bad[0])
	}
	t.Logf("%d reads during %d re-renders", rd.reads, rotations+1)

	expectSecretOnlyInSinks(t, p.logs.String(), out, demo, db)
	if strings.Contains(b.logs.String(), renderCanary) {
		t.Errorf("the broker's log holds a secret")
	}
	// Every decision was render's own: this process, as root.
	allowed := 0
	for _, row := range auditRows(t, e.db) {
		if row.Credential != "demo" || row.Decision != "allow" {
			continue
		}
		allowed++
		if row.Subject != "unix:uid:0" || row.PeerPID != int64(os.Getpid()) {
			t.Errorf("decision %s was made for %s pid %d, want render (this process)", row.DecisionID, row.Subject, row.PeerPID)
		}
	}
	if allowed < rotations+2 {
		t.Errorf("%d decisions allowed demo, want one per refresh (at least %d)", allowed, rotations+2)
	}
}

// expectSecretOnlyInSinks checks that no secret value is in render's
// output, and that the sink directory holds the sink files only (no
// temporary file left behind).
func expectSecretOnlyInSinks(t *testing.T, logs, dir string, sinkFiles ...string) {
	t.Helper()
	if strings.Contains(logs, renderCanary) {
		t.Errorf("render's output holds a secret:\n%s", logs)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		p := filepath.Join(dir, en.Name())
		isSink := false
		for _, s := range sinkFiles {
			isSink = isSink || s == p
		}
		if !isSink {
			t.Errorf("%s is in the sink directory", en.Name())
		}
	}
}

// TestRenderOnce renders once with --once: the template's content, mode
// 0600 by default, a configured mode, owner and group (nobody:nogroup, as
// root), one fetch — one audit row — for the two sinks of one credential,
// and exit 0.
func TestRenderOnce(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test gives a file to nobody:nogroup, which needs root; the suite runs as root")
	}
	e, _, out := newRenderEnv(t)
	cfg := e.renderFile(`sinks:
  - credential: db
    path: out/db.env
    template: "PGUSER={{.username}}\nPGPASSWORD={{.password}}\n"
  - credential: db
    path: out/db.json
    template: '{"user": {{json .username}}, "password": {{json .password}}, "expires_at": "{{.expires_at}}"}'
    mode: "0640"
    owner: nobody
    group: nogroup
  - credential: demo
    path: out/demo
    template: "{{.value}}"
    mode: "0444"
    group: "4242"
`)
	var stdout, stderr syncBuffer
	code := (&cli{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}).render([]string{"--config", cfg, "--socket", e.socket, "--once"})
	if code != 0 {
		t.Fatalf("render --once: exit %d:\n%s", code, stderr.String())
	}
	expectFile := func(name, content string, mode os.FileMode, uid, gid uint32) {
		t.Helper()
		p := filepath.Join(out, name)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile("^" + content + "$").Match(b) {
			t.Errorf("%s holds %q, want %q", name, b, content)
		}
		fi, _ := os.Stat(p)
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != mode || st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: %v %d:%d, want %v %d:%d", name, fi.Mode(), st.Uid, st.Gid, mode, uid, gid)
		}
	}
	expectFile("db.env", "PGUSER=app\nPGPASSWORD="+renderCanary+"-pw\n", 0o600, 0, 0)
	expectFile("db.json", `\{"user": "app", "password": "`+renderCanary+`-pw", "expires_at": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"\}`, 0o640, 65534, 65534)
	expectFile("demo", renderCanary+"-demo-0", 0o444, 0, 4242)
	rows := map[string]int{}
	for _, row := range auditRows(t, e.db) {
		rows[row.Credential]++
	}
	if rows["db"] != 1 || rows["demo"] != 1 {
		t.Errorf("decisions per credential %v, want one fetch each: the two db sinks share it", rows)
	}
	expectSecretOnlyInSinks(t, stderr.String()+stdout.String(), out, filepath.Join(out, "db.env"), filepath.Join(out, "db.json"), filepath.Join(out, "demo"))
}

// TestRenderOnceFailures checks --once's exit code (8, apart from get's 3–7) and its reasons: a
// denied credential, an unknown one, a template field the credential
// lacks, and a broker that is not there; the sinks that could be rendered
// are.
func TestRenderOnceFailures(t *testing.T) {
	e, _, out := newRenderEnv(t)
	if err := os.WriteFile(filepath.Join(out, "forbidden"), []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := e.renderFile(`sinks:
  - {credential: demo, path: out/demo, template: "{{.value}}"}
  - {credential: forbidden, path: out/forbidden, template: "{{.value}}"}
  - {credential: nope, path: out/nope, template: "{{.value}}"}
  - {credential: demo, path: out/typo, template: "{{.password}}"}
`)
	var stderr syncBuffer
	code := (&cli{stdin: strings.NewReader(""), stdout: &stderr, stderr: &stderr}).render([]string{"--config", cfg, "--socket", e.socket, "--once"})
	if code != exitSinkFailed {
		t.Fatalf("render --once: exit %d, want %d:\n%s", code, exitSinkFailed, stderr.String())
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`credbroker render: sinks: \S+/out/forbidden \(credential forbidden\): fetching: credbroker: no policy allows unix:uid:0 to read forbidden \(403 denied, decision \S+\)`),
		regexp.MustCompile(`credbroker render: sinks: \S+/out/nope \(credential nope\): fetching: credbroker: .*"nope".* \(404 not_found, decision \S+\)`),
		regexp.MustCompile(`credbroker render: sinks: \S+/out/typo \(credential demo\): template: .*map has no entry for key "password" \(credential "demo" has expires_at, lease_id, value\)`),
	} {
		if !want.MatchString(stderr.String()) {
			t.Errorf("stderr does not match %s:\n%s", want, stderr.String())
		}
	}
	if got, _ := os.ReadFile(filepath.Join(out, "demo")); string(got) != renderCanary+"-demo-0" {
		t.Errorf("the sink that could be rendered holds %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(out, "forbidden")); string(got) != "old\n" {
		t.Errorf("a denied sink's file changed to %q", got)
	}
	for _, name := range []string{"nope", "typo"} {
		if _, err := os.Stat(filepath.Join(out, name)); !os.IsNotExist(err) {
			t.Errorf("the failed sink %s was written: %v", name, err)
		}
	}
	expectSecretOnlyInSinks(t, stderr.String(), out, filepath.Join(out, "demo"), filepath.Join(out, "forbidden"))

	// No broker on the socket.
	stderr = syncBuffer{}
	code = (&cli{stdin: strings.NewReader(""), stdout: &stderr, stderr: &stderr}).render([]string{"--config", cfg, "--socket", e.socket + ".none", "--once"})
	if code != exitSinkFailed || !strings.Contains(stderr.String(), "cannot reach the broker at "+e.socket+".none") {
		t.Errorf("render --once without a broker: exit %d:\n%s", code, stderr.String())
	}
}

// TestRenderBinary runs `credbroker render` as its own process: its
// decisions are that process's, SIGTERM stops it with exit 0 after it kept
// a file fresh, and --once and --help exit as documented.
func TestRenderBinary(t *testing.T) {
	e, _, out := newRenderEnv(t)
	demo := filepath.Join(out, "demo")
	cfg := e.renderFile(`sinks:
  - {credential: demo, path: out/demo, template: "{{.value}}\n"}
`)
	cmd := exec.Command(binPath, "render", "--config", cfg, "--socket", e.socket, "--log-format", "text")
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	waitContent(t, demo, renderCanary+"-demo-0\n", logs)
	e.writeSecret("secrets/demo", renderCanary+"-demo-1")
	waitContent(t, demo, renderCanary+"-demo-1\n", logs)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(hangBound):
		t.Fatalf("render did not stop on SIGTERM:\n%s", logs)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(logs.String(), `msg=stopped`) {
		t.Errorf("render exited %d after SIGTERM:\n%s", code, logs)
	}
	for _, row := range auditRows(t, e.db) {
		if row.Credential == "demo" && row.PeerPID != int64(cmd.Process.Pid) {
			t.Errorf("decision %s was made for pid %d, want render's %d", row.DecisionID, row.PeerPID, cmd.Process.Pid)
		}
	}
	expectSecretOnlyInSinks(t, logs.String(), out, demo)

	if _, stderr, code := credbroker(t, "render", "--config", cfg, "--socket", e.socket, "--once"); code != 0 {
		t.Errorf("render --once: exit %d: %s", code, stderr)
	}
	bad := e.write("bad.yaml", "sinks:\n  - {credential: forbidden, path: out/f, template: x}\n")
	if _, stderr, code := credbroker(t, "render", "--config", bad, "--socket", e.socket, "--once"); code != exitSinkFailed || !strings.Contains(stderr, "403 denied") {
		t.Errorf("render --once of a denied credential: exit %d: %s", code, stderr)
	}
	if stdout, _, code := credbroker(t, "render", "--help"); code != 0 || !strings.Contains(stdout, renderSummary) || !strings.Contains(stdout, "--once") {
		t.Errorf("render --help: exit %d:\n%s", code, stdout)
	}
}
