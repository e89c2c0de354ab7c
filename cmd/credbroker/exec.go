package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"text/template"
	"time"

	"golang.org/x/sys/unix"

	"github.com/credbroker/credbroker/client"
)

// execHelp describes `credbroker exec` for the help system.
const execHelp = `Runs COMMAND with credentials in its environment, for applications that read their
secrets from environment variables and cannot be changed to ask the broker. exec fetches each
--credential over the socket API — the broker attests exec itself, and COMMAND runs as exec's
child — sets one variable per field, CREDENTIAL_FIELD uppercased with every other character
than A-Z 0-9 _ as _ (orders-db, password → ORDERS_DB_PASSWORD), or the KEY=VALUE lines an
--env-template renders, and starts COMMAND. It refreshes each credential ahead of its expiry;
when a value changes it restarts COMMAND with the new values (--on-change restart, the
default: SIGTERM, then SIGKILL after --grace), or sends it --signal (--on-change signal) for an
application that fetches the credential again itself on that signal: its environment cannot
change. SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2 and SIGQUIT are forwarded to COMMAND, and
exec exits with COMMAND's status (128+N when signal N ended it). Secrets go only into
COMMAND's environment: never to a file, exec's log, its command line or its own environment.`

// execExamples are shell lines for the help system.
const execExamples = `credbroker exec --credential orders-db -- ./orders-service --port 8080
# variables named by a template: DB_URL=postgres://{{ field "orders-db" "username" }}:…
credbroker exec --credential orders-db --env-template db.env.tmpl -- python app.py
# an app that fetches its credential again on SIGHUP
credbroker exec --credential api-token --on-change signal --signal SIGHUP -- ./worker`

// Exit codes of exec for a COMMAND that cannot run, as env(1), nice(1)
// and timeout(1) have them.
const (
	exitCannotRun      = 126
	exitCommandMissing = 127
)

// forwarded are the signals exec passes on to COMMAND.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT}

// maxEnvTemplateOutput bounds what an env template may render.
const maxEnvTemplateOutput = 1 << 20

// The --on-change modes.
const (
	onChangeRestart = "restart"
	onChangeSignal  = "signal"
)

func (c *cli) exec(args []string) int {
	fset := flag.NewFlagSet("exec", flag.ContinueOnError)
	var names stringList
	fset.Var(&names, "credential", "credential to fetch, repeatable (required)")
	socket := fset.String("socket", envOr(client.SocketEnv, client.DefaultSocket), "socket API path (default $CREDBROKER_SOCKET or "+client.DefaultSocket+")")
	tokenFile := fset.String("token-file", "", "file holding a bearer token to present as evidence, read at each fetch")
	tmplFile := fset.String("env-template", "", `text/template file rendering KEY=VALUE lines, with {{ field "CREDENTIAL" "FIELD" }} (default: CREDENTIAL_FIELD variables)`)
	onChange := fset.String("on-change", onChangeRestart, "when a credential's value changes: restart COMMAND, or signal it")
	sigName := fset.String("signal", "SIGHUP", "the signal --on-change signal sends")
	grace := fset.Duration("grace", 10*time.Second, "how long COMMAND has to exit after SIGTERM, on a restart, before SIGKILL")
	flagArgs, command := splitCommand(fset, args)
	if pos, err := c.parse(fset, flagArgs); err != nil {
		return exitUsage
	} else if len(pos) > 0 {
		fmt.Fprintf(c.stderr, "credbroker exec: unexpected argument %q: put the command after --\n", pos[0])
		return exitUsage
	}
	s := &supervisor{c: c, argv: command, grace: *grace, names: names}
	if code := s.configure(*onChange, *sigName, *tmplFile); code != 0 {
		return code
	}
	var opts []client.Option
	if *tokenFile != "" {
		opts = append(opts, client.WithTokenFile(*tokenFile))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.fetch(ctx, client.New(*socket, opts...)); err != nil {
		return c.failClient(err)
	}
	env, err := s.credentialEnv()
	if err != nil {
		fmt.Fprintf(c.stderr, "credbroker exec: %v\n", err)
		return exitUsage
	}
	s.childEnv = env
	return s.run()
}

// splitCommand splits exec's arguments at COMMAND: after "--", or at the
// first argument that is neither a flag of fset nor a flag's value.
func splitCommand(fset *flag.FlagSet, args []string) (flags, command []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return args[:i], args[i+1:]
		case a == "-" || !strings.HasPrefix(a, "-"):
			return args[:i], args[i:]
		case strings.Contains(a, "="):
			continue
		}
		if f := fset.Lookup(strings.TrimLeft(a, "-")); f != nil {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !b.IsBoolFlag() {
				i++ // the flag's value
			}
		}
	}
	return args, nil
}

// supervisor runs COMMAND with the credentials of its sources and restarts
// or signals it when they change.
type supervisor struct {
	c        *cli
	names    []string
	argv     []string
	path     string // argv[0] resolved
	grace    time.Duration
	signal   syscall.Signal // 0: restart on change
	tmpl     *template.Template
	sources  []*client.Source
	changed  chan string
	sigs     chan os.Signal
	childEnv []string // the credential variables COMMAND runs with
}

// configure checks the command line; a non-zero result is the exit code.
func (s *supervisor) configure(onChange, sigName, tmplFile string) int {
	usage := func(format string, a ...any) int {
		fmt.Fprintf(s.c.stderr, "credbroker exec: "+format+"\n", a...)
		return exitUsage
	}
	switch {
	case len(s.names) == 0:
		return usage("give at least one --credential")
	case len(s.argv) == 0:
		return usage("give the command to run: credbroker exec --credential NAME -- COMMAND [ARG…]")
	case onChange != onChangeRestart && onChange != onChangeSignal:
		return usage("--on-change %q: use restart or signal", onChange)
	case s.grace <= 0:
		return usage("--grace must be positive")
	}
	for i, n := range s.names {
		if slices.Contains(s.names[:i], n) {
			return usage("--credential %s given twice", n)
		}
	}
	if onChange == onChangeSignal {
		if s.signal = signalNamed(sigName); s.signal == 0 {
			return usage("--signal %q: name a signal such as SIGHUP or USR1", sigName)
		}
	}
	if tmplFile != "" {
		t, err := parseEnvTemplate(tmplFile)
		if err != nil {
			return usage("%v", err)
		}
		s.tmpl = t
	}
	path, err := exec.LookPath(s.argv[0])
	if err != nil {
		fmt.Fprintf(s.c.stderr, "credbroker exec: %v\n", err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return exitCommandMissing
		}
		return exitCannotRun
	}
	s.path = path
	return 0
}

// signalNamed parses "SIGHUP", "HUP" or "hup"; 0 if it names no signal.
func signalNamed(name string) syscall.Signal {
	name = strings.ToUpper(name)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	return unix.SignalNum(name)
}

// fetch starts a Source for each credential, reporting refresh failures on
// stderr, so that a refusal ends exec before COMMAND starts.
func (s *supervisor) fetch(ctx context.Context, cl *client.Client) error {
	s.changed = make(chan string, 1)
	for _, name := range s.names {
		src, err := cl.Source(ctx, name, client.OnRefreshError(func(err error) {
			fmt.Fprintf(s.c.stderr, "credbroker exec: %s; the command keeps the values it has\n", strings.TrimPrefix(err.Error(), "credbroker: "))
		}))
		if err != nil {
			return err
		}
		s.sources = append(s.sources, src)
		go func() {
			for cred := range src.Changes() {
				select {
				case s.changed <- cred.Name:
				default: // a change is already pending; it reads every source
				}
			}
		}()
	}
	return nil
}

// credentialEnv renders the variables of the sources' current credentials.
func (s *supervisor) credentialEnv() ([]string, error) {
	creds := make([]*client.Credential, len(s.sources))
	for i, src := range s.sources {
		creds[i] = src.Current()
	}
	if s.tmpl != nil {
		return renderEnvTemplate(s.tmpl, creds)
	}
	return defaultEnv(creds)
}

// run starts COMMAND and supervises it until it exits, returning its exit
// code.
func (s *supervisor) run() int {
	s.sigs = make(chan os.Signal, 8)
	signal.Notify(s.sigs, forwarded...)
	defer signal.Stop(s.sigs)
	ch, code := s.start()
	if ch == nil {
		return code
	}
	for {
		select {
		case sig := <-s.sigs:
			s.forward(ch, sig)
		case <-ch.done:
			return exitStatus(ch.cmd.ProcessState)
		case name := <-s.changed:
			env, err := s.credentialEnv()
			switch {
			case err != nil:
				fmt.Fprintf(s.c.stderr, "credbroker exec: %s changed, but %v; the command keeps the values it has\n", name, err)
				continue
			case slices.Equal(env, s.childEnv):
				continue // a field COMMAND does not see changed
			}
			s.childEnv = env
			if s.signal != 0 {
				fmt.Fprintf(s.c.stderr, "credbroker exec: %s changed: sending %s to %s (pid %d)\n", name, unix.SignalName(s.signal), s.argv[0], ch.cmd.Process.Pid)
				_ = ch.cmd.Process.Signal(s.signal)
				continue
			}
			fmt.Fprintf(s.c.stderr, "credbroker exec: %s changed: restarting %s (pid %d)\n", name, s.argv[0], ch.cmd.Process.Pid)
			if stopping := s.stop(ch); stopping {
				return exitStatus(ch.cmd.ProcessState)
			}
			if ch, code = s.start(); ch == nil {
				return code
			}
		}
	}
}

// child is a running COMMAND.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once it exited and was reaped
}

// start runs COMMAND with the current credential variables; on failure it
// returns the exit code.
func (s *supervisor) start() (*child, int) {
	cmd := &exec.Cmd{
		Path:        s.path,
		Args:        s.argv,
		Env:         mergeEnv(os.Environ(), s.childEnv),
		Stdin:       s.c.stdin,
		Stdout:      s.c.stdout,
		Stderr:      s.c.stderr,
		SysProcAttr: childProcAttr(),
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(s.c.stderr, "credbroker exec: %v\n", err)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, exitCommandMissing
		}
		return nil, exitCannotRun
	}
	ch := &child{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(ch.done) }()
	return ch, 0
}

// stop ends COMMAND for a restart: SIGTERM, then SIGKILL once the grace
// has passed. Signals for exec meanwhile are forwarded; it reports whether
// one of them asked exec to stop, in which case there is no restart.
func (s *supervisor) stop(ch *child) (stopping bool) {
	_ = ch.cmd.Process.Signal(syscall.SIGTERM)
	grace := time.NewTimer(s.grace)
	defer grace.Stop()
	for {
		select {
		case <-ch.done:
			return stopping
		case sig := <-s.sigs:
			s.forward(ch, sig)
			stopping = stopping || sig == syscall.SIGINT || sig == syscall.SIGTERM || sig == syscall.SIGQUIT
		case <-grace.C:
			fmt.Fprintf(s.c.stderr, "credbroker exec: %s (pid %d) still runs %v after SIGTERM: killing it\n", s.argv[0], ch.cmd.Process.Pid, s.grace)
			_ = ch.cmd.Process.Kill()
		}
	}
}

// forward passes sig on to COMMAND, except a SIGINT or SIGQUIT that the
// terminal sent to its foreground process group, which COMMAND, in exec's
// group, received from the terminal already.
func (s *supervisor) forward(ch *child, sig os.Signal) {
	if (sig == syscall.SIGINT || sig == syscall.SIGQUIT) && inForeground() {
		return
	}
	_ = ch.cmd.Process.Signal(sig)
}

// inForeground reports whether exec is in its controlling terminal's
// foreground process group: then the terminal's ^C and ^\ reach COMMAND
// too.
func inForeground() bool {
	tty, err := os.OpenFile("/dev/tty", os.O_RDONLY|syscall.O_NOCTTY, 0)
	if err != nil {
		return false // no controlling terminal
	}
	defer tty.Close()
	pgrp, err := unix.IoctlGetInt(int(tty.Fd()), unix.TIOCGPGRP)
	return err == nil && pgrp == syscall.Getpgrp()
}

// exitStatus is COMMAND's exit code, 128+N when signal N ended it.
func exitStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// mergeEnv returns base with the KEY=VALUE entries of add, which replace
// base's entries of the same keys.
func mergeEnv(base, add []string) []string {
	keys := make(map[string]bool, len(add))
	for _, kv := range add {
		k, _, _ := strings.Cut(kv, "=")
		keys[k] = true
	}
	out := make([]string, 0, len(base)+len(add))
	for _, kv := range base {
		if k, _, _ := strings.Cut(kv, "="); !keys[k] {
			out = append(out, kv)
		}
	}
	return append(out, add...)
}

// defaultEnv names each field CREDENTIAL_FIELD (envName), sorted, refusing
// two fields that would share a name.
func defaultEnv(creds []*client.Credential) ([]string, error) {
	owner := map[string]string{}
	var env []string
	for _, cred := range creds {
		for _, f := range cred.Fields() {
			k := envName(cred.Name, f)
			if prev, ok := owner[k]; ok {
				return nil, fmt.Errorf("%s and %s/%s both make the variable %s: name the variables with --env-template", prev, cred.Name, f, k)
			}
			owner[k] = cred.Name + "/" + f
			env = append(env, k+"="+cred.Data[f])
		}
	}
	slices.Sort(env)
	return env, nil
}

// parseEnvTemplate reads an env template: text/template, with
// {{ field "CREDENTIAL" "FIELD" }} for a value, and the credentials as a
// map from name to field to value for range and index.
func parseEnvTemplate(path string) (*template.Template, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--env-template: %w", err)
	}
	t, err := template.New(path).Option("missingkey=error").Funcs(template.FuncMap{
		"field": func(string, string) (string, error) { return "", nil }, // replaced at each rendering
	}).Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("--env-template: %w", err)
	}
	return t, nil
}

// renderEnvTemplate renders t with creds and parses its KEY=VALUE lines.
// Errors never quote the output, which holds secrets.
func renderEnvTemplate(t *template.Template, creds []*client.Credential) ([]string, error) {
	data := make(map[string]map[string]string, len(creds))
	for _, c := range creds {
		data[c.Name] = c.Data
	}
	t, err := t.Clone()
	if err != nil {
		return nil, fmt.Errorf("env template: %w", err)
	}
	t.Funcs(template.FuncMap{"field": func(name, field string) (string, error) {
		fields, ok := data[name]
		if !ok {
			return "", fmt.Errorf("no credential %q: add --credential %s", name, name)
		}
		v, ok := fields[field]
		if !ok {
			return "", fmt.Errorf("credential %q has no field %q", name, field)
		}
		return v, nil
	}})
	out := &boundedBuffer{max: maxEnvTemplateOutput}
	if err := t.Execute(out, data); err != nil {
		return nil, fmt.Errorf("env template: %s", redactValues(err.Error(), creds))
	}
	return parseEnvLines(out.Bytes())
}

// redactValues replaces every credential value in msg: some of
// text/template's errors print the value they failed on ("range can't
// iterate over …"). Values under four bytes are left, as they would garble
// the message and protect nothing.
func redactValues(msg string, creds []*client.Credential) string {
	var values []string
	for _, c := range creds {
		for _, v := range c.Data {
			if len(v) >= 4 {
				values = append(values, v)
			}
		}
	}
	slices.SortFunc(values, func(a, b string) int { return len(b) - len(a) }) // longest first
	for _, v := range values {
		msg = strings.ReplaceAll(msg, v, "[redacted]")
	}
	return msg
}

// envKey is a portable environment variable name.
var envKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// parseEnvLines reads KEY=VALUE lines: blank lines and # comments are
// skipped, the value is the rest of the line as it is, and a key may appear
// once. Errors name the line, never its content.
func parseEnvLines(b []byte) ([]string, error) {
	var env []string
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), maxEnvTemplateOutput)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !envKey.MatchString(k) {
			return nil, fmt.Errorf("env template line %d: want KEY=VALUE with KEY of A-Z a-z 0-9 _, not starting with a digit", n)
		}
		if prev, ok := seen[k]; ok {
			return nil, fmt.Errorf("env template line %d: %s set again (line %d)", n, k, prev)
		}
		seen[k] = n
		env = append(env, k+"="+v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("env template: %v", err)
	}
	slices.Sort(env)
	return env, nil
}

// boundedBuffer is a buffer that refuses to grow past max.
type boundedBuffer struct {
	bytes.Buffer
	max int
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		return 0, fmt.Errorf("output over %d bytes", b.max)
	}
	return b.Buffer.Write(p)
}
