package main

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/credbroker/credbroker/attest/oidc/oidctest"
	"github.com/credbroker/credbroker/internal/pgtest"
)

// nobody is the unprivileged user the doctor tests run the binary as.
var nobody = &syscall.Credential{Uid: 65534, Gid: 65534}

// doctorWorld is a directory every user may enter, holding a copy of the
// binary that every user may run, policies and a static secret every user
// may read, for running doctor as root and as nobody.
type doctorWorld struct {
	t   *testing.T
	dir string
	bin string
}

func newDoctorWorld(t *testing.T) *doctorWorld {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the doctor tests need root, to run doctor as root and as nobody")
	}
	dir, err := os.MkdirTemp("/tmp", "cb-doctor-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	w := &doctorWorld{t: t, dir: dir, bin: filepath.Join(dir, "credbroker")}
	w.chmod(dir, 0o755)
	src, err := os.ReadFile(binPath)
	if err != nil {
		t.Fatal(err)
	}
	w.write("credbroker", string(src))
	w.chmod(w.bin, 0o755)
	w.write("policies.yaml", "policies:\n  - {name: p, effect: allow, workloads: [{unix: {uid: 0}}], credentials: [demo]}\n")
	w.write("demo", "doctor-static-secret-canary")
	return w
}

func (w *doctorWorld) path(name string) string { return filepath.Join(w.dir, name) }

func (w *doctorWorld) write(name, content string) string {
	w.t.Helper()
	p := w.path(name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		w.t.Fatal(err)
	}
	return p
}

func (w *doctorWorld) chmod(p string, mode os.FileMode) {
	w.t.Helper()
	if err := os.Chmod(p, mode); err != nil {
		w.t.Fatal(err)
	}
}

// mkdir makes a directory of the world with mode and owner uid.
func (w *doctorWorld) mkdir(name string, mode os.FileMode, uid int) string {
	w.t.Helper()
	p := w.path(name)
	if err := os.Mkdir(p, mode); err != nil {
		w.t.Fatal(err)
	}
	w.chmod(p, mode) // past the umask, and the sticky bit
	if err := os.Chown(p, uid, uid); err != nil {
		w.t.Fatal(err)
	}
	return p
}

// config writes a configuration with the socket and audit paths given,
// beside the policies, and extra YAML.
func (w *doctorWorld) config(socket, auditDB, extra string) string {
	return w.write("credbroker.yaml", "socket: "+socket+"\naudit: {path: "+auditDB+"}\npolicies: policies.yaml\n"+
		"credentials:\n  - {name: demo, static: {file: demo}}\n"+extra)
}

// doctor runs `credbroker doctor --config cfg` as cred (nil: root), with
// the command prefixed by wrap (unshare …) if given, and returns the
// output and the exit code.
func (w *doctorWorld) doctor(cred *syscall.Credential, wrap []string, cfg string, extra ...string) (string, int) {
	w.t.Helper()
	args := append(append(wrap[:len(wrap):len(wrap)], w.bin, "doctor", "--config", cfg), extra...)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = w.dir
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		w.t.Fatalf("%q: %v\n%s", args, err, out)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// line returns the output line of the check, and the fix line under it.
func line(out, status, check string) (string, bool) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(status) + ` +` + regexp.QuoteMeta(check) + `: .*(\n      fix: .*)?`).FindString(out)
	return m, m != ""
}

func wantLine(t *testing.T, out, status, check string, contains ...string) {
	t.Helper()
	l, ok := line(out, status, check)
	if !ok {
		t.Errorf("no %s line for %q:\n%s", status, check, out)
		return
	}
	for _, c := range contains {
		if !strings.Contains(l, c) {
			t.Errorf("%s %s lacks %q:\n%s", status, check, c, l)
		}
	}
}

// TestDoctorGoodConfig runs doctor on a good configuration as root and as
// nobody (each owning the directories): every check passes, and the
// privilege check changes from OK (root, CAP_SYS_PTRACE and
// CAP_DAC_READ_SEARCH) to WARN (nobody, without them) with what to grant.
func TestDoctorGoodConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cred *syscall.Credential
		uid  int
	}{{"root", nil, 0}, {"nobody", nobody, 65534}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newDoctorWorld(t)
			run, state := w.mkdir("run", 0o755, tc.uid), w.mkdir("state", 0o750, tc.uid)
			cfg := w.config(filepath.Join(run, "broker.sock"), filepath.Join(state, "audit.db"), "admin: 127.0.0.1:0\n")
			if tc.cred == nil {
				// The probe needs a process of another user to try: a
				// machine running only root's processes (a CI container)
				// has none, so one is started. The test process itself is
				// that for nobody.
				startOtherUser(t, nobody)
			}
			out, code := w.doctor(tc.cred, nil, cfg)
			if code != 0 || regexp.MustCompile(`(?m)^FAIL`).MatchString(out) {
				t.Fatalf("exit %d on a good configuration:\n%s", code, out)
			}
			wantLine(t, out, "OK", "configuration", "1 credentials, 1 policies")
			wantLine(t, out, "OK", "socket directory", run)
			wantLine(t, out, "OK", "audit directory", state)
			wantLine(t, out, "OK", "admin address", "127.0.0.1:0 is free")
			wantLine(t, out, "OK", "credential demo (static)")
			if !regexp.MustCompile(`(?m)^(OK|WARN) +pid namespace: `).MatchString(out) {
				t.Errorf("no pid namespace line:\n%s", out)
			}
			if tc.cred == nil {
				wantLine(t, out, "OK", "privileges", "uid 0 with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH", "exe allowed, fd allowed")
				wantLine(t, out, "OK", "tcp lookup", "the BPF iterator loads")
			} else {
				wantLine(t, out, "OK", "tcp lookup", "no TCP listener; the BPF iterator does not load here", "operation not permitted")
				wantLine(t, out, "WARN", "privileges", "uid 65534 without CAP_SYS_PTRACE or CAP_DAC_READ_SEARCH", "permission denied", "fix: run as root, or grant CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH", "[SYS_PTRACE, DAC_READ_SEARCH]")
			}
			if strings.Contains(out, "doctor-static-secret-canary") {
				t.Errorf("the static secret is in the output:\n%s", out)
			}
		})
	}
}

// startOtherUser runs cat as cred until the test ends. Start returns once
// the exec has succeeded, so /proc shows the process as cred's from then.
func startOtherUser(t *testing.T, cred *syscall.Credential) {
	t.Helper()
	cmd := exec.Command("cat")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
}

// TestDoctorDirectories: directories the broker's user cannot use FAIL
// with the fix, and exit 1; a missing socket directory the user could
// create is a WARN.
func TestDoctorDirectories(t *testing.T) {
	w := newDoctorWorld(t)
	rootOwned := w.mkdir("root-owned", 0o755, 0)
	cfg := w.config(filepath.Join(rootOwned, "missing", "broker.sock"), filepath.Join(rootOwned, "audit.db"), "admin: \"\"\n")

	out, code := w.doctor(nobody, nil, cfg)
	if code != 1 {
		t.Errorf("nobody: exit %d, want 1:\n%s", code, out)
	}
	wantLine(t, out, "FAIL", "socket directory", rootOwned+"/missing does not exist, and uid 65534 may not create it", "fix: install -d -m 0755 -o 65534 "+rootOwned+"/missing")
	wantLine(t, out, "FAIL", "audit directory", "uid 65534 may not create files in "+rootOwned, "fix: chown 65534 "+rootOwned)

	out, code = w.doctor(nil, nil, cfg)
	if code != 0 {
		t.Errorf("root: exit %d, want 0:\n%s", code, out)
	}
	wantLine(t, out, "WARN", "socket directory", "does not exist; run creates it")
	wantLine(t, out, "OK", "audit directory", rootOwned)

	// As broker.ListenUnix refuses them: a directory of another user, one
	// every user may write without the sticky bit, and a socket path
	// holding something else.
	other := w.mkdir("other", 0o755, 65534)
	open := w.mkdir("open", 0o777, 0)
	sticky := w.mkdir("sticky", 0o777|os.ModeSticky, 0)
	notSocket := w.write("not-a-socket", "")
	for _, tc := range []struct {
		socket, status, want string
	}{
		{filepath.Join(other, "s"), "FAIL", "owned by uid 65534, neither root nor the broker's uid 0"},
		{filepath.Join(open, "s"), "FAIL", "fix: chmod o-w " + open},
		{filepath.Join(sticky, "s"), "OK", sticky},
		{notSocket, "FAIL", notSocket + " exists and is not a socket"},
	} {
		cfg := w.config(tc.socket, filepath.Join(rootOwned, "audit.db"), "admin: \"\"\n")
		out, _ := w.doctor(nil, nil, cfg)
		wantLine(t, out, tc.status, "socket directory", tc.want)
	}
	// A missing audit directory, even for root.
	cfg = w.config(filepath.Join(sticky, "s"), filepath.Join(w.dir, "no-such-dir", "audit.db"), "admin: \"\"\n")
	out, code = w.doctor(nil, nil, cfg)
	wantLine(t, out, "FAIL", "audit directory", "no-such-dir does not exist", "fix: install -d")
	if code != 1 {
		t.Errorf("missing audit directory: exit %d", code)
	}
}

// TestDoctorPorts: an admin address another program holds FAILs; one a
// running broker holds is that broker's, and its socket is reported live.
func TestDoctorPorts(t *testing.T) {
	w := newDoctorWorld(t)
	run, state := w.mkdir("run", 0o755, 0), w.mkdir("state", 0o700, 0)
	socket := filepath.Join(run, "broker.sock")
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := w.config(socket, filepath.Join(state, "audit.db"), "admin: "+held.Addr().String()+"\n")
	// The holder accepts no request: the probe for a broker waits --timeout.
	out, code := w.doctor(nil, nil, cfg, "--timeout", "1s")
	wantLine(t, out, "FAIL", "admin address", held.Addr().String()+" is in use by another program", "fix: set admin: to another address")
	if code != 1 {
		t.Errorf("exit %d with the admin port held", code)
	}
	addr := held.Addr().String()
	held.Close() // the broker takes it

	e := &env{t: t, dir: w.dir, socket: socket, db: filepath.Join(state, "audit.db"), config: cfg}
	b := e.start()
	out, code = w.doctor(nil, nil, cfg)
	wantLine(t, out, "OK", "admin address", addr+" is in use by a running credbroker")
	wantLine(t, out, "WARN", "socket directory", "a process is listening on "+socket)
	if code != 0 {
		t.Errorf("beside the running broker: exit %d:\n%s", code, out)
	}
	b.stop(syscall.SIGTERM)
}

// TestDoctorPIDNamespace runs doctor in a PID namespace of its own: with
// a /proc of the host's namespace the unix attestor would refuse to start
// (FAIL); with its own /proc, callers outside are invisible (WARN, with
// shareProcessNamespace as the fix).
func TestDoctorPIDNamespace(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatal("unshare (util-linux) is not installed: apt-get install util-linux")
	}
	w := newDoctorWorld(t)
	run, state := w.mkdir("run", 0o755, 0), w.mkdir("state", 0o700, 0)
	cfg := w.config(filepath.Join(run, "s"), filepath.Join(state, "audit.db"), "admin: \"\"\n")

	out, code := w.doctor(nil, []string{unshare, "--pid", "--fork"}, cfg)
	wantLine(t, out, "FAIL", "pid namespace", "/proc belongs to another PID namespace", "fix: mount a /proc")
	if code != 1 {
		t.Errorf("exit %d with a foreign /proc", code)
	}
	out, code = w.doctor(nil, []string{unshare, "--pid", "--fork", "--mount-proc"}, cfg)
	wantLine(t, out, "WARN", "pid namespace", "not the host's", "seen with pid 0 and refused", "shareProcessNamespace: true")
	if code != 0 {
		t.Errorf("exit %d in a namespace of its own (a WARN only):\n%s", code, out)
	}
}

// TestDoctorAttestors checks the attestors' key sources against a real TLS
// issuer that serves discovery only to the broker's own token, as a
// cluster does: the right token and CA pass, a wrong token and an
// untrusted certificate FAIL, missing files FAIL; the broker's token is
// never printed.
func TestDoctorAttestors(t *testing.T) {
	const brokerToken = "doctor-broker-token-canary"
	iss := oidctest.NewIssuer(t, oidctest.NewRSAKey(t, "k1"), oidctest.NewECKey(t, "k2"))
	iss.RequireBearer(brokerToken)
	dir := writeFiles(t, map[string]string{
		"policies.yaml": "policies:\n  - {name: p, effect: allow, workloads: [{unix: {uid: 0}}], credentials: [demo]}\n",
		"demo":          "v",
		"ca.pem":        string(iss.CAPEM()),
		"token":         brokerToken,
		"wrong-token":   "not-the-broker-token",
	})
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()
	for _, tc := range []struct {
		name, attestors, status, check string
		want                           []string
	}{
		{"kubernetes with the broker's token", "kubernetes: {issuer: " + iss.URL + ", audiences: [credbroker], ca_file: ca.pem, bearer_token_file: token}",
			"OK", "kubernetes attestor", []string{"signing keys from discovery of " + iss.URL}},
		{"kubernetes with a wrong token", "kubernetes: {issuer: " + iss.URL + ", audiences: [credbroker], ca_file: ca.pem, bearer_token_file: wrong-token}",
			"FAIL", "kubernetes attestor", []string{"401", "fix: the issuer refused the broker: bearer_token_file"}},
		{"kubernetes without the CA", "kubernetes: {issuer: " + iss.URL + ", audiences: [credbroker], bearer_token_file: token}",
			"FAIL", "kubernetes attestor", []string{"certificate"}},
		{"kubernetes jwks_file missing", "kubernetes: {audiences: [credbroker], jwks_file: nope.json}",
			"FAIL", "kubernetes attestor", []string{"nope.json"}},
		{"github on an untrusted host", "github: {audiences: [credbroker], jwks_url: " + iss.URL + oidctest.JWKSPath + "}",
			"FAIL", "github attestor", []string{"certificate"}},
		{"spiffe bundle missing", "spiffe: {trust_domain: example.org, audiences: [credbroker], bundle_file: nope.jwks}",
			"FAIL", "spiffe attestor", []string{"nope.jwks"}},
		{"aws sts endpoint closed", "aws: {server_id: broker.example, sts_endpoint: https://" + closedAddr + "}",
			"FAIL", "aws attestor", []string{closedAddr + " does not answer"}},
		{"ambient token missing", "ambient: {token_file: nope-token}",
			"FAIL", "ambient attestor", []string{"nope-token"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(dir, "credbroker.yaml")
			os.WriteFile(cfg, []byte("socket: "+filepath.Join(dir, "s")+"\nadmin: \"\"\naudit: {path: "+filepath.Join(dir, "audit.db")+"}\npolicies: policies.yaml\n"+
				"credentials:\n  - {name: demo, static: {file: demo}}\nattestors:\n  "+tc.attestors+"\n"), 0o600)
			out, errOut, code := runCLI("doctor", "--config", cfg, "--timeout", "20s")
			wantLine(t, out, tc.status, tc.check, tc.want...)
			if (tc.status == "FAIL") != (code == 1) {
				t.Errorf("exit %d with a %s:\n%s%s", code, tc.status, out, errOut)
			}
			if strings.Contains(out+errOut, brokerToken) {
				t.Errorf("the broker's token is in the output:\n%s", out)
			}
		})
	}
}

// TestDoctorUpstreams pings a real PostgreSQL as run does at start: the
// admin role that may create roles passes, one that may not FAILs with
// the grant to give, a stopped server FAILs; no password is printed.
func TestDoctorUpstreams(t *testing.T) {
	pg := pgtest.Start(t)
	const weakPassword = "weak-role-password-canary"
	pg.Exec(t, "CREATE ROLE weak LOGIN PASSWORD '"+weakPassword+"'")
	dir := writeFiles(t, map[string]string{
		"policies.yaml": "policies:\n  - {name: p, effect: allow, workloads: [{unix: {uid: 0}}], credentials: [demo]}\n",
		"demo":          "v",
		"admin-dsn":     pg.AdminDSN(),
		"weak-dsn":      pg.DSN("weak", weakPassword, "postgres"),
	})
	cfg := filepath.Join(dir, "credbroker.yaml")
	os.WriteFile(cfg, []byte("socket: "+filepath.Join(dir, "s")+"\nadmin: \"\"\naudit: {path: "+filepath.Join(dir, "audit.db")+"}\npolicies: policies.yaml\n"+
		"credentials:\n  - {name: demo, static: {file: demo}}\n  - {name: orders-db, postgres: {admin_dsn_file: admin-dsn}}\n  - {name: weak-db, postgres: {admin_dsn_file: weak-dsn}}\n"), 0o600)
	secrets := []string{weakPassword, pg.SuperPassword}

	out, _, code := runCLI("doctor", "--config", cfg, "--timeout", "30s")
	wantLine(t, out, "OK", "credential orders-db (postgres)", "upstream answers and accepts the broker's credentials")
	wantLine(t, out, "FAIL", "credential weak-db (postgres)", "grant it CREATEROLE")
	wantLine(t, out, "OK", "credential demo (static)")
	if code != 1 {
		t.Errorf("exit %d with a FAIL", code)
	}
	pg.Stop(t)
	down, _, _ := runCLI("doctor", "--config", cfg, "--timeout", "30s")
	wantLine(t, down, "FAIL", "credential orders-db (postgres)", "upstream: ")
	for _, s := range secrets {
		if strings.Contains(out+down, s) {
			t.Errorf("a password is in the output:\n%s%s", out, down)
		}
	}
}

// TestDoctorBadConfig: a configuration check rejects FAILs, pointing at
// check; no --config is a usage error.
func TestDoctorBadConfig(t *testing.T) {
	dir := writeFiles(t, map[string]string{"credbroker.yaml": "socket: /x\ncolour: blue\n"})
	out, _, code := runCLI("doctor", "--config", filepath.Join(dir, "credbroker.yaml"))
	wantLine(t, out, "FAIL", "configuration", `unknown key "colour"`, "fix: run `credbroker check --config")
	if code != 1 {
		t.Errorf("exit %d", code)
	}
	if _, errOut, code := runCLI("doctor"); code != exitUsage || !strings.Contains(errOut, "--config is required") {
		t.Errorf("no --config: exit %d, %q", code, errOut)
	}
}

// TestDoctorTCPLookup: a broker that cannot load the BPF iterator (here
// run as nobody, without CAP_BPF) WARNs about its TCP listeners' cost, and
// FAILs when tcp_lookup bpf asks for the iterator; tcp_lookup proc is OK.
func TestDoctorTCPLookup(t *testing.T) {
	w := newDoctorWorld(t)
	run, state := w.mkdir("run", 0o755, 65534), w.mkdir("state", 0o750, 65534)
	listener := "listeners:\n  - http: {listen: \"127.0.0.1:0\", upstream: https://127.0.0.1:1, credential: demo, header: {value: \"{{.value}}\"}}\n"
	for _, tc := range []struct {
		lookup, status string
		want           []string
	}{
		{"auto", "WARN", []string{"the BPF iterator does not load", "the callers of 1 TCP listeners are found by reading /proc/*/fd", "fix: grant CAP_BPF and CAP_PERFMON"}},
		{"bpf", "FAIL", []string{"tcp_lookup bpf, but the BPF iterator does not load", "the broker will not start", "tcp_lookup: proc"}},
		{"proc", "OK", []string{"tcp_lookup proc"}},
	} {
		t.Run(tc.lookup, func(t *testing.T) {
			cfg := w.config(filepath.Join(run, "broker.sock"), filepath.Join(state, "audit.db"),
				"attestors: {unix: {tcp_lookup: "+tc.lookup+"}}\n"+listener)
			out, code := w.doctor(nobody, nil, cfg)
			wantLine(t, out, tc.status, "tcp lookup", tc.want...)
			if (code == 1) != (tc.status == "FAIL") {
				t.Errorf("exit %d with a %s line:\n%s", code, tc.status, out)
			}
		})
	}
}
