package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The exec tests run the credbroker binary's exec against a real broker,
// with this test binary as COMMAND: execTestMode=child makes a re-executed
// test binary the child, before TestMain runs.
const execTestMode = "CREDBROKER_EXEC_TEST_MODE"

// The child's settings, from its environment: the file it appends its
// events to, the variables it reports, and what it does (serve, exit:N),
// and whether it ignores SIGTERM.
const (
	childOut  = "EXEC_CHILD_OUT"
	childVars = "EXEC_CHILD_VARS"
	childMode = "EXEC_CHILD_MODE"
	childTerm = "EXEC_CHILD_TERM"
)

func init() {
	if os.Getenv(execTestMode) == "child" {
		os.Exit(execChild())
	}
}

// execChild is COMMAND: it appends "start PID VAR=value …" to its file,
// then with mode exit:N exits N; with serve it appends "signal NAME" for
// each signal it gets until SIGTERM, which ends it as SIGTERM's default
// would (unless told to ignore it).
func execChild() int {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	line := fmt.Sprintf("start %d", os.Getpid())
	for _, k := range strings.Split(os.Getenv(childVars), ",") {
		v, ok := os.LookupEnv(k)
		if !ok {
			v = "<unset>"
		}
		line += " " + k + "=" + v
	}
	appendLine(line)
	mode := os.Getenv(childMode)
	if code, ok := strings.CutPrefix(mode, "exit:"); ok {
		n, _ := strconv.Atoi(code)
		return n
	}
	for sig := range sigs {
		appendLine("signal " + sig.String())
		if sig == syscall.SIGTERM && os.Getenv(childTerm) != "ignore" {
			signal.Reset(syscall.SIGTERM)
			syscall.Kill(os.Getpid(), syscall.SIGTERM)
			select {}
		}
	}
	return 0
}

func appendLine(s string) {
	f, err := os.OpenFile(os.Getenv(childOut), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		panic(err)
	}
	f.WriteString(s + "\n")
	f.Close()
}

// execProc is a running `credbroker exec`.
type execProc struct {
	t      *testing.T
	self   string // COMMAND: this test binary
	cmd    *exec.Cmd
	out    string // the child's event file
	stderr *syncBuffer
	done   chan struct{}
}

// startExec runs `credbroker exec ARGS -- COMMAND` with this test binary as
// COMMAND, its settings in env. It runs in a session of its own, so that no
// terminal of the test's sends it signals.
func startExec(t *testing.T, env []string, args ...string) *execProc {
	t.Helper()
	return startExecTTY(t, nil, env, args...)
}

// startExecTTY is startExec with tty, when not nil, as the controlling
// terminal of exec's session and its stdin.
func startExecTTY(t *testing.T, tty *os.File, env []string, args ...string) *execProc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &execProc{t: t, self: self, out: filepath.Join(t.TempDir(), "child.log"), stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binPath, append(append([]string{"exec"}, args...), "--", self)...)
	p.cmd.Env = append(os.Environ(), append(env, execTestMode+"=child", childOut+"="+p.out)...)
	p.cmd.Stdout, p.cmd.Stderr = p.stderr, p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if tty != nil {
		p.cmd.Stdin = tty
		p.cmd.SysProcAttr.Setctty, p.cmd.SysProcAttr.Ctty = true, 0
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitLine waits until the child's file has a line for which match is true
// and returns it.
func (p *execProc) waitLine(match func(string) bool) string {
	p.t.Helper()
	for deadline := time.Now().Add(hangBound); ; time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(p.out)
		for _, l := range strings.Split(string(b), "\n") {
			if l != "" && match(l) {
				return l
			}
		}
		select {
		case <-p.done:
			p.t.Fatalf("exec exited (%v) before the child wrote the line; child:\n%s\nexec:\n%s", p.cmd.ProcessState, b, p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("no such line after %v; child:\n%s\nexec:\n%s", hangBound, b, p.stderr)
		}
	}
}

// count returns how many of the child's events are line.
func (p *execProc) count(line string) int {
	n := 0
	for _, l := range p.lines() {
		if l == line {
			n++
		}
	}
	return n
}

// waitCount waits until the child has written line n times.
func (p *execProc) waitCount(line string, n int) {
	p.t.Helper()
	for deadline := time.Now().Add(hangBound); p.count(line) < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			p.t.Fatalf("%q not %d times after %v: %q\nexec:\n%s", line, n, hangBound, p.lines(), p.stderr)
		}
	}
}

// lines returns the child's events.
func (p *execProc) lines() []string {
	b, _ := os.ReadFile(p.out)
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")[:strings.Count(string(b), "\n")]
}

// wait waits for exec to exit and returns its exit code.
func (p *execProc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(hangBound):
		p.t.Fatalf("exec still runs after %v:\n%s", hangBound, p.stderr)
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *execProc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// execPolicies: root may read orders-db and api, whose issues live 2
// seconds, so that exec refreshes them about every second.
const execPolicies = `policies:
  - name: root-reads
    effect: allow
    workloads: [{unix: {uid: 0}}]
    credentials: [orders-db, api, a-b, a_b]
    ttl: 2s
  - name: nobody-reads-forbidden
    effect: deny
    workloads: [{unix: {uid: 0}}]
    credentials: [forbidden]
`

const execCredentials = `  - {name: orders-db, static: {fields: {username: {file: secrets/user}, password: {file: secrets/password}}}}
  - {name: api, static: {file: secrets/api}}
  - {name: forbidden, static: {file: secrets/api}}
  - {name: a-b, static: {file: secrets/api}}
  - {name: a_b, static: {file: secrets/api}}
`

// The canaries: values that must reach the child and nothing else.
const (
	canaryPassword1 = "CANARY-pw-1-b7c1e0"
	canaryPassword2 = "CANARY-pw-2-94d2aa"
	canaryAPI       = "CANARY-api-5e01f3"
)

func newExecEnv(t *testing.T) (*env, *brokerProc) {
	t.Helper()
	e := newEnv(t, execPolicies, execCredentials)
	e.write("secrets/user", "orders_app")
	e.write("secrets/password", canaryPassword1)
	e.write("secrets/api", canaryAPI)
	return e, e.start()
}

// rotateSecret replaces a secret file as a secret manager would.
func (e *env) rotateSecret(name, value string) {
	e.t.Helper()
	tmp := e.write(name+".new", value)
	if err := os.Rename(tmp, filepath.Join(e.dir, name)); err != nil {
		e.t.Fatal(err)
	}
}

func hasAll(subs ...string) func(string) bool {
	return func(l string) bool {
		for _, s := range subs {
			if !strings.Contains(l, s) {
				return false
			}
		}
		return true
	}
}

// TestExecRestartsOnRotation: the child sees CREDENTIAL_FIELD variables;
// when the password is rotated, exec's refresh sees the new value and
// restarts the child (SIGTERM, then a new child with the new value); the
// secret is in the child's environment and in neither exec's command line,
// its environment nor its log.
func TestExecRestartsOnRotation(t *testing.T) {
	e, b := newExecEnv(t)
	p := startExec(t, []string{childVars + "=ORDERS_DB_USERNAME,ORDERS_DB_PASSWORD,API_VALUE", childMode + "=serve"},
		"--socket", e.socket, "--credential", "orders-db", "--credential", "api")
	first := p.waitLine(hasAll("start ", "ORDERS_DB_USERNAME=orders_app", "ORDERS_DB_PASSWORD="+canaryPassword1, "API_VALUE="+canaryAPI))
	childPID, _ := strconv.Atoi(strings.Fields(first)[1])
	// The check reads /proc as it would find a leak: the child's own
	// environment holds the secret.
	if environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", childPID)); !bytes.Contains(environ, []byte(canaryPassword1)) {
		t.Fatalf("the child's /proc environ lacks the password: %q", environ)
	}

	e.rotateSecret("secrets/password", canaryPassword2)
	p.waitLine(hasAll("start ", "ORDERS_DB_PASSWORD="+canaryPassword2, "API_VALUE="+canaryAPI))
	if got := p.lines(); len(got) != 3 || !strings.HasPrefix(got[1], "signal terminated") {
		t.Errorf("child events %q, want a start, SIGTERM, a start", got)
	}
	// exec logs before it acts, but its stderr reaches the test through
	// another pipe than the child's lines: wait for it.
	p.waitStderr("credbroker exec: orders-db changed: restarting " + p.self)

	for _, f := range []string{"cmdline", "environ"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", p.cmd.Process.Pid, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{canaryPassword1, canaryPassword2, canaryAPI} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("exec's /proc/PID/%s holds a secret", f)
			}
		}
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 128+int(syscall.SIGTERM) {
		t.Errorf("exit %d after SIGTERM ended the child, want 143", code)
	}
	for _, secret := range []string{canaryPassword1, canaryPassword2, canaryAPI} {
		if strings.Contains(p.stderr.String(), secret) || strings.Contains(b.logs.String(), secret) {
			t.Errorf("a secret is in exec's or the broker's log:\n%s", p.stderr)
		}
	}
	// Every refresh was exec's own request, attested as exec's process.
	rows := auditRows(t, e.db)
	allowed := 0
	for _, r := range rows {
		if r.Decision == "allow" {
			allowed++
			if r.PeerPID != int64(p.cmd.Process.Pid) {
				t.Errorf("a decision for pid %d, want exec's %d", r.PeerPID, p.cmd.Process.Pid)
			}
		}
	}
	if allowed < 3 {
		t.Errorf("%d allowed decisions, want the two first fetches and a refresh", allowed)
	}
}

// TestExecSignalsOnRotation: with --on-change signal, a rotation sends the
// signal and does not restart the child.
func TestExecSignalsOnRotation(t *testing.T) {
	e, _ := newExecEnv(t)
	p := startExec(t, []string{childVars + "=ORDERS_DB_PASSWORD", childMode + "=serve"},
		"--socket", e.socket, "--credential", "orders-db", "--on-change", "signal", "--signal", "USR1")
	p.waitLine(hasAll("start ", canaryPassword1))
	e.rotateSecret("secrets/password", canaryPassword2)
	p.waitLine(hasAll("signal user defined signal 1"))
	if got := p.lines(); len(got) != 2 {
		t.Errorf("child events %q, want one start and the signal", got)
	}
	p.waitStderr("credbroker exec: orders-db changed: sending SIGUSR1 to ")
	p.signal(syscall.SIGTERM)
	p.wait()
}

// TestExecRefreshFailure: while the broker is down, each failed refresh is
// logged, the expiry too, and the child keeps running with its values;
// once the broker is back, a refresh of the same values restarts nothing.
func TestExecRefreshFailure(t *testing.T) {
	e, b := newExecEnv(t)
	p := startExec(t, []string{childVars + "=API_VALUE", childMode + "=serve"}, "--socket", e.socket, "--credential", "api")
	p.waitLine(hasAll("start ", canaryAPI))
	b.stop(syscall.SIGTERM)
	p.waitStderr(`credbroker exec: credential "api" expired at `)
	if log := p.stderr.String(); !strings.Contains(log, `credbroker exec: refreshing "api" failed (attempt 1; it expires at `) ||
		!strings.Contains(log, "cannot reach the broker at "+e.socket) || !strings.Contains(log, "; the command keeps the values it has") {
		t.Errorf("exec's log:\n%s", log)
	}
	e.start()
	// Wait for a refresh after the broker came back: a new decision in the log.
	for deadline := time.Now().Add(hangBound); len(auditAllowed(t, e.db)) < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no refresh after the broker came back:\n%s", p.stderr)
		}
	}
	if got := p.lines(); len(got) != 1 {
		t.Errorf("child events %q, want the one start", got)
	}
	if strings.Contains(p.stderr.String(), canaryAPI) {
		t.Errorf("the log holds the secret")
	}
	p.signal(syscall.SIGTERM)
	p.wait()
}

// auditAllowed returns the allowed decisions in the audit log.
func auditAllowed(t *testing.T, db string) []auditRow {
	var rows []auditRow
	for _, r := range auditRows(t, db) {
		if r.Decision == "allow" {
			rows = append(rows, r)
		}
	}
	return rows
}

// waitStderr waits until exec has logged s.
func (p *execProc) waitStderr(s string) {
	p.t.Helper()
	for deadline := time.Now().Add(hangBound); !strings.Contains(p.stderr.String(), s); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			p.t.Fatalf("exec did not log %q:\n%s", s, p.stderr)
		}
	}
}

// TestExecKillsAfterGrace: a child that ignores SIGTERM is killed once the
// grace has passed, and started again.
func TestExecKillsAfterGrace(t *testing.T) {
	e, _ := newExecEnv(t)
	p := startExec(t, []string{childVars + "=ORDERS_DB_PASSWORD", childMode + "=serve", childTerm + "=ignore"},
		"--socket", e.socket, "--credential", "orders-db", "--grace", "200ms")
	p.waitLine(hasAll("start ", canaryPassword1))
	e.rotateSecret("secrets/password", canaryPassword2)
	second := p.waitLine(hasAll("start ", canaryPassword2))
	p.waitStderr("still runs 200ms after SIGTERM: killing it")
	pid, _ := strconv.Atoi(strings.Fields(second)[1])
	syscall.Kill(pid, syscall.SIGKILL) // it ignores SIGTERM
	if code := p.wait(); code != 137 {
		t.Errorf("exit %d, want 137", code)
	}
}

// TestExecSignalsAndExitCodes: the forwarded signals reach the child, and
// exec exits with the child's status, or 128+N when signal N ended it.
func TestExecSignalsAndExitCodes(t *testing.T) {
	e, _ := newExecEnv(t)
	p := startExec(t, []string{childVars + "=API_VALUE", childMode + "=serve"}, "--socket", e.socket, "--credential", "api")
	p.waitLine(hasAll("start "))
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGINT, syscall.SIGQUIT} {
		p.signal(sig)
		p.waitLine(hasAll("signal " + sig.String()))
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 143 {
		t.Errorf("exit %d, want 143", code)
	}

	for _, code := range []int{0, 1, 42} {
		p := startExec(t, []string{childVars + "=API_VALUE", childMode + fmt.Sprintf("=exit:%d", code)}, "--socket", e.socket, "--credential", "api")
		if got := p.wait(); got != code {
			t.Errorf("the child exited %d, exec %d", code, got)
		}
	}

	p = startExec(t, []string{childVars + "=API_VALUE", childMode + "=serve"}, "--socket", e.socket, "--credential", "api")
	pid, _ := strconv.Atoi(strings.Fields(p.waitLine(hasAll("start ")))[1])
	syscall.Kill(pid, syscall.SIGKILL)
	if code := p.wait(); code != 137 {
		t.Errorf("the child was killed, exec exits %d, want 137", code)
	}
}

// TestExecTemplate: an env template names the variables; the child sees
// those and not the default names.
func TestExecTemplate(t *testing.T) {
	e, _ := newExecEnv(t)
	tmpl := e.write("app.env.tmpl", `# the application's variables
DB_URL=postgres://{{ field "orders-db" "username" }}:{{ field "orders-db" "password" }}@db/orders
{{- range $name, $fields := . }}{{ if eq $name "api" }}
API_TOKEN={{ index $fields "value" }}{{ end }}{{ end }}
`)
	p := startExec(t, []string{childVars + "=DB_URL,API_TOKEN,ORDERS_DB_PASSWORD", childMode + "=exit:0"},
		"--socket", e.socket, "--credential", "orders-db", "--credential", "api", "--env-template", tmpl)
	if code := p.wait(); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.stderr)
	}
	want := "DB_URL=postgres://orders_app:" + canaryPassword1 + "@db/orders API_TOKEN=" + canaryAPI + " ORDERS_DB_PASSWORD=<unset>"
	if got := p.lines(); len(got) != 1 || !strings.HasSuffix(got[0], want) {
		t.Errorf("child saw %q, want %q", got, want)
	}
}

// TestExecRefusesBeforeStarting: what is wrong with the credentials or the
// template ends exec before the child starts, with a message that names it
// and holds no secret.
func TestExecRefusesBeforeStarting(t *testing.T) {
	e, _ := newExecEnv(t)
	n := 0
	tmpl := func(body string) string { n++; return e.write(fmt.Sprintf("t%d.tmpl", n), body) }
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"denied", []string{"--credential", "forbidden"}, exitDenied, "denied by policy nobody-reads-forbidden (403 denied, decision "},
		{"not found", []string{"--credential", "nope"}, exitNotFound, `"nope"`},
		{"unreachable", []string{"--credential", "api", "--socket", e.dir + "/none.sock"}, exitUnreachable, "cannot reach the broker at " + e.dir + "/none.sock"},
		{"variables collide", []string{"--credential", "a-b", "--credential", "a_b"}, exitUsage, "a-b/value and a_b/value both make the variable A_B_VALUE: name the variables with --env-template"},
		{"missing field", []string{"--credential", "api", "--env-template", tmpl(`X={{ field "api" "password" }}`)}, exitUsage, `credential "api" has no field "password"`},
		{"credential not asked for", []string{"--credential", "api", "--env-template", tmpl(`X={{ field "orders-db" "password" }}`)}, exitUsage, `no credential "orders-db": add --credential orders-db`},
		{"not KEY=VALUE", []string{"--credential", "api", "--env-template", tmpl("A=1\n{{ field \"api\" \"value\" }}\n")}, exitUsage, "env template line 2: want KEY=VALUE"},
		{"value in an error", []string{"--credential", "api", "--env-template", tmpl(`{{ range field "api" "value" }}{{ end }}`)}, exitUsage, "range can't iterate over [redacted]"},
		{"template syntax", []string{"--credential", "api", "--env-template", tmpl("X={{ field ")}, exitUsage, "--env-template: template: "},
		{"no credential", nil, exitUsage, "give at least one --credential"},
		{"bad mode", []string{"--credential", "api", "--on-change", "reload"}, exitUsage, `--on-change "reload": use restart or signal`},
		{"bad signal", []string{"--credential", "api", "--on-change", "signal", "--signal", "SIGNOPE"}, exitUsage, `--signal "SIGNOPE"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--socket", e.socket}, tt.args...)
			p := startExec(t, []string{childMode + "=exit:0"}, args...)
			code := p.wait()
			if code != tt.code || !strings.Contains(p.stderr.String(), tt.msg) {
				t.Errorf("exit %d, want %d; log lacks %q:\n%s", code, tt.code, tt.msg, p.stderr)
			}
			if len(p.lines()) != 0 {
				t.Errorf("the child started: %q", p.lines())
			}
			for _, secret := range []string{canaryAPI, canaryPassword1} {
				if strings.Contains(p.stderr.String(), secret) {
					t.Errorf("the log holds a secret:\n%s", p.stderr)
				}
			}
		})
	}
}

// TestExecCommandCannotRun: a command that is not found is 127, one that
// cannot be executed 126, as env(1) has them.
func TestExecCommandCannotRun(t *testing.T) {
	e, _ := newExecEnv(t)
	notExec := e.write("not-executable", "#!/bin/sh\n")
	for cmd, want := range map[string]int{"no-such-command-cb": exitCommandMissing, e.dir + "/missing": exitCommandMissing, notExec: exitCannotRun} {
		var stdout, stderr bytes.Buffer
		code := (&cli{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}).exec([]string{"--socket", e.socket, "--credential", "api", "--", cmd})
		if code != want || !strings.Contains(stderr.String(), "credbroker exec: ") {
			t.Errorf("%s: exit %d, want %d: %s", cmd, code, want, stderr.String())
		}
	}
}

// TestExecTerminalInterrupt: a ^C typed at exec's terminal reaches the
// child once, from the terminal (both are in its foreground process
// group), not a second time from exec; a signal sent to exec alone is
// forwarded.
func TestExecTerminalInterrupt(t *testing.T) {
	e, _ := newExecEnv(t)
	master, slave := openPTY(t)
	p := startExecTTY(t, slave, []string{childVars + "=API_VALUE", childMode + "=serve"}, "--socket", e.socket, "--credential", "api")
	p.waitLine(hasAll("start "))
	// A second SIGINT from exec may merge with the terminal's while both are
	// pending in the child, so one round could miss it: ten rounds do not.
	for round := 1; round <= 10; round++ {
		if _, err := master.Write([]byte{3}); err != nil { // ^C
			t.Fatal(err)
		}
		p.waitCount("signal interrupt", round)
		p.signal(syscall.SIGUSR1) // forwarded after any SIGINT exec forwarded
		p.waitCount("signal user defined signal 1", round)
		if n := p.count("signal interrupt"); n != round {
			t.Fatalf("round %d: the child got %d interrupts: %q", round, n, p.lines())
		}
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 143 {
		t.Errorf("exit %d, want 143", code)
	}
}

// openPTY opens a pseudo-terminal pair.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}
