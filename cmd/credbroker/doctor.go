package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	awsattest "github.com/credbroker/credbroker/attest/aws"
	githubattest "github.com/credbroker/credbroker/attest/github"
	"github.com/credbroker/credbroker/attest/oidc"
	spiffeattest "github.com/credbroker/credbroker/attest/spiffe"
	unixattest "github.com/credbroker/credbroker/attest/unix"
	"github.com/credbroker/credbroker/providers"
)

// Outcomes of a doctor check.
const (
	statusOK   = "OK"
	statusWarn = "WARN"
	statusFail = "FAIL"
)

// finding is the outcome of one doctor check, and what to do about it.
type finding struct {
	status string
	check  string // what was checked: "audit directory"
	msg    string
	fix    string // "" when there is nothing to do
}

// doctor checks, on the machine the broker is to run on and as its user,
// what `check` cannot: directories, ports, privileges, the PID namespace,
// and the attestors' and providers' endpoints. It prints one line per
// check and exits 1 when one FAILs.
func (c *cli) doctor(args []string) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	configPath := fs.String("config", "", "configuration file or directory (required)")
	override := overrideFlags(fs)
	timeout := fs.Duration("timeout", 5*time.Second, "how long each network check may take")
	if _, err := c.parse(fs, args); err != nil {
		return exitUsage
	}
	if *configPath == "" {
		fmt.Fprintln(c.stderr, "credbroker doctor: --config is required")
		return exitUsage
	}
	lc, err := loadAll(*configPath, nil, override)
	if err != nil {
		lines := problemLines(err)
		c.report([]finding{{statusFail, "configuration", fmt.Sprintf("%d problems, the first: %s", len(lines), lines[0]),
			fmt.Sprintf("run `credbroker check --config %s` for every problem, fix them, then run doctor again", *configPath)}})
		return 1
	}
	d := doctorRun{cfg: lc.cfg, timeout: *timeout, uid: os.Geteuid()}
	found := []finding{{statusOK, "configuration", fmt.Sprintf("%s: %d credentials, %d policies (policy set version %s)",
		strings.Join(lc.cfg.Files, ", "), len(lc.cfg.Credentials), lc.policies.Len(), lc.policies.Version()), ""}}
	for _, check := range []func() []finding{d.socketDirs, d.stateDirs, d.ports, d.privileges, d.tcpLookup, d.pidNamespace, d.attestors, d.upstreams} {
		found = append(found, check()...)
	}
	if c.report(found) {
		return 1
	}
	return 0
}

// report prints the findings and a summary, and reports whether one FAILed.
func (c *cli) report(found []finding) bool {
	counts := map[string]int{}
	for _, f := range found {
		counts[f.status]++
		fmt.Fprintf(c.stdout, "%-4s  %s: %s\n", f.status, f.check, f.msg)
		if f.fix != "" {
			fmt.Fprintf(c.stdout, "      fix: %s\n", f.fix)
		}
	}
	fmt.Fprintf(c.stdout, "\n%d OK, %d WARN, %d FAIL\n", counts[statusOK], counts[statusWarn], counts[statusFail])
	return counts[statusFail] > 0
}

// doctorRun holds what the checks share.
type doctorRun struct {
	cfg     *Config
	timeout time.Duration
	uid     int // the effective uid: the broker's user, when run as it
}

// socketDirs checks the directory of the socket API's socket and of every
// unix listener, as broker.ListenUnix will use them.
func (d doctorRun) socketDirs() []finding {
	out := d.socketDir("socket directory", d.cfg.Socket)
	for _, l := range d.cfg.Listeners {
		if network, address := l.Listener.Network(); network == "unix" {
			out = append(out, d.socketDir(l.Kind+" listener socket directory", address)...)
		}
	}
	return out
}

func (d doctorRun) socketDir(check, path string) []finding {
	dir := filepath.Dir(filepath.Clean(path))
	st, err := lstatDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		parent := existingAncestor(dir)
		if writable(parent) == nil {
			return []finding{{statusWarn, check, fmt.Sprintf("%s does not exist; run creates it, mode 0755, owned by uid %d", dir, d.uid),
				fmt.Sprintf("create it ahead with the owner and mode you mean: install -d -m 0755 -o %d %s (systemd: RuntimeDirectory=)", d.uid, dir)}}
		}
		return []finding{{statusFail, check, fmt.Sprintf("%s does not exist, and uid %d may not create it in %s", dir, d.uid, parent),
			fmt.Sprintf("install -d -m 0755 -o %d %s (systemd: RuntimeDirectory=), or choose a socket path in a directory of uid %d", d.uid, dir, d.uid)}}
	case err != nil:
		return []finding{{statusFail, check, err.Error(), "point the socket at a directory"}}
	}
	// The rules broker.ListenUnix enforces.
	switch {
	case st.Uid != 0 && int(st.Uid) != d.uid:
		return []finding{{statusFail, check, fmt.Sprintf("%s is owned by uid %d, neither root nor the broker's uid %d, who could replace the socket", dir, st.Uid, d.uid),
			fmt.Sprintf("chown %d %s, or use a directory of root's or the broker's", d.uid, dir)}}
	case st.Mode&0o002 != 0 && st.Mode&unix.S_ISVTX == 0:
		return []finding{{statusFail, check, fmt.Sprintf("%s can be written by every user and has no sticky bit, so anyone could replace the socket", dir),
			fmt.Sprintf("chmod o-w %s, or chmod +t %s", dir, dir)}}
	}
	if err := writable(dir); err != nil {
		return []finding{{statusFail, check, fmt.Sprintf("uid %d may not create the socket in %s: %v", d.uid, dir, err),
			fmt.Sprintf("chown %d %s (or make it writable by the broker's group)", d.uid, dir)}}
	}
	ok := finding{statusOK, check, fmt.Sprintf("%s: owned by uid %d, writable by uid %d", dir, st.Uid, d.uid), ""}
	var sock unix.Stat_t
	if err := unix.Lstat(path, &sock); err != nil {
		return []finding{ok}
	}
	if sock.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return []finding{ok, {statusFail, check, path + " exists and is not a socket; run refuses to replace it", "remove it, or choose another socket path"}}
	}
	if conn, err := net.DialTimeout("unix", path, d.timeout); err == nil {
		conn.Close()
		return []finding{ok, {statusWarn, check, "a process is listening on " + path + " (a broker already running?); a second run refuses to replace it", ""}}
	}
	return []finding{ok}
}

// lstatDir returns the stat of dir, which must be a directory.
func lstatDir(dir string) (*unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: dir, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	return &st, nil
}

// existingAncestor is the nearest directory above dir that exists.
func existingAncestor(dir string) string {
	for {
		parent := filepath.Dir(dir)
		if _, err := os.Stat(parent); err == nil || parent == dir {
			return parent
		}
		dir = parent
	}
}

// writable reports whether this process may create files in dir, by its
// effective ids, as the kernel will decide when the broker does.
func writable(dir string) error {
	return unix.Faccessat(unix.AT_FDCWD, dir, unix.W_OK|unix.X_OK, unix.AT_EACCESS)
}

// stateDirs checks the directories of the files the broker writes: the
// audit database (SQLite creates its -wal and -shm files beside it), its
// key, head and checkpoint files, the lease store and the AWS replay
// database.
func (d doctorRun) stateDirs() []finding {
	a := d.cfg.Audit
	files := []string{a.Path, a.KeyFile, a.HeadFile, a.Checkpoint.File}
	if d.cfg.mintsCredentials() {
		files = append(files, d.cfg.Leases.Store)
	}
	if aws := d.cfg.Attestors.AWS; aws != nil {
		files = append(files, aws.ReplayDB)
	}
	byDir := map[string][]string{}
	var dirs []string
	for _, f := range files {
		if f == "" {
			continue
		}
		dir := filepath.Dir(filepath.Clean(f))
		if byDir[dir] == nil {
			dirs = append(dirs, dir)
		}
		byDir[dir] = append(byDir[dir], f)
	}
	var out []finding
	for _, dir := range dirs {
		check := "state directory"
		if dir == filepath.Dir(filepath.Clean(a.Path)) {
			check = "audit directory"
		}
		out = append(out, d.stateDir(check, dir, byDir[dir])...)
	}
	if a.KeyFile == "" {
		out = append(out, d.keyFile(a.Path+".key")...)
	} else {
		out = append(out, d.keyFile(a.KeyFile)...)
	}
	return out
}

func (d doctorRun) stateDir(check, dir string, files []string) []finding {
	if _, err := lstatDir(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return []finding{{statusFail, check, fmt.Sprintf("%s does not exist (it holds %s)", dir, strings.Join(files, ", ")),
				fmt.Sprintf("install -d -m 0750 -o %d %s (systemd: StateDirectory=)", d.uid, dir)}}
		}
		return []finding{{statusFail, check, err.Error(), "point the configuration at a directory"}}
	}
	if err := writable(dir); err != nil {
		return []finding{{statusFail, check, fmt.Sprintf("uid %d may not create files in %s: %v (it holds %s)", d.uid, dir, err, strings.Join(files, ", ")),
			fmt.Sprintf("chown %d %s, or choose a directory of uid %d", d.uid, dir, d.uid)}}
	}
	var out []finding
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			if err := unix.Faccessat(unix.AT_FDCWD, f, unix.R_OK|unix.W_OK, unix.AT_EACCESS); err != nil {
				out = append(out, finding{statusFail, check, fmt.Sprintf("uid %d may not read and write %s: %v", d.uid, f, err), fmt.Sprintf("chown %d %s", d.uid, f)})
			}
		}
	}
	if len(out) == 0 {
		out = append(out, finding{statusOK, check, fmt.Sprintf("%s: writable by uid %d (%s)", dir, d.uid, strings.Join(files, ", ")), ""})
	}
	return out
}

// keyFile checks an existing audit key file as the audit log will: owned by
// the broker's user, readable by nobody else.
func (d doctorRun) keyFile(path string) []finding {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil // created with a new log
	}
	switch {
	case int(st.Uid) != d.uid:
		return []finding{{statusFail, "audit key", fmt.Sprintf("%s is owned by uid %d, not the broker's uid %d: the audit log refuses it", path, st.Uid, d.uid), fmt.Sprintf("chown %d %s", d.uid, path)}}
	case st.Mode&0o077 != 0:
		return []finding{{statusFail, "audit key", fmt.Sprintf("%s has mode %04o: others may read the log's keys, and the audit log refuses it", path, st.Mode&0o777), "chmod 600 " + path}}
	}
	return nil
}

// ports checks that the admin address and the TCP listeners' addresses are
// free, or held by a running broker.
func (d doctorRun) ports() []finding {
	var out []finding
	running := false
	if admin := *d.cfg.Admin; admin != "" {
		f := d.port("admin address", admin, "set admin: to another address, or --admin off")
		if f.status == statusFail && d.isBroker(admin) {
			running = true
			f = finding{statusOK, "admin address", admin + " is in use by a running credbroker (its /metrics answered)", ""}
		}
		out = append(out, f)
	}
	for _, l := range d.cfg.Listeners {
		network, address := l.Listener.Network()
		if network != "tcp" {
			continue
		}
		f := d.port(l.Kind+" listener", address, "change the listener's listen address, or stop what holds it")
		if f.status == statusFail && running && strings.Contains(f.msg, "in use") {
			f = finding{statusWarn, f.check, address + " is in use, presumably by the running credbroker", ""}
		}
		out = append(out, f)
	}
	return out
}

func (d doctorRun) port(check, addr, fix string) finding {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		return finding{statusOK, check, addr + " is free", ""}
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return finding{statusFail, check, addr + " is in use by another program", fix + " (ss -ltnp shows which program holds it)"}
	}
	if errors.Is(err, syscall.EACCES) {
		fix = "ports below 1024 need root or CAP_NET_BIND_SERVICE: grant it, or " + fix
	}
	return finding{statusFail, check, fmt.Sprintf("cannot listen on %s: %v", addr, err), fix}
}

// isBroker reports whether a credbroker's admin endpoints answer at addr.
func (d doctorRun) isBroker(addr string) bool {
	client := &http.Client{Timeout: d.timeout}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode == http.StatusOK && strings.Contains(string(body), "credbroker_")
}

// Bits of the capabilities attestation needs, in the capability sets.
const (
	capDacReadSearch = 2
	capSysPtrace     = 19
)

// privileges checks that the broker may read the executable and open files
// of its callers: /proc/PID/exe for the exe claims, and /proc/PID/fd to
// find a TCP loopback caller by its socket. The kernel allows both for a
// process of the same uid; for another uid's, reading exe needs
// CAP_SYS_PTRACE and listing fd also needs CAP_DAC_READ_SEARCH (the
// directory is its owner's, mode 0500).
func (d doctorRun) privileges() []finding {
	const check = "privileges"
	caps, err := effectiveCaps()
	if err != nil {
		return []finding{{statusWarn, check, "cannot read the capabilities in /proc/self/status: " + err.Error(), ""}}
	}
	ptrace := caps&(1<<capSysPtrace) != 0
	search := caps&(1<<capDacReadSearch) != 0
	held := fmt.Sprintf("uid %d with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH", d.uid)
	switch {
	case ptrace && !search:
		held = fmt.Sprintf("uid %d with CAP_SYS_PTRACE, without CAP_DAC_READ_SEARCH", d.uid)
	case !ptrace && search:
		held = fmt.Sprintf("uid %d with CAP_DAC_READ_SEARCH, without CAP_SYS_PTRACE", d.uid)
	case !ptrace:
		held = fmt.Sprintf("uid %d without CAP_SYS_PTRACE or CAP_DAC_READ_SEARCH", d.uid)
	}
	pid, uid, exeErr, fdErr := probeOtherProcess(d.uid)
	tried := "no process of another user is visible to test it on"
	if pid != 0 {
		tried = fmt.Sprintf("/proc/%d (uid %d): exe %s, fd %s", pid, uid, errText(exeErr), errText(fdErr))
	}
	switch {
	case pid != 0 && exeErr == nil && fdErr == nil:
		return []finding{{statusOK, check, fmt.Sprintf("%s may read every caller's executable and open files (%s)", held, tried), ""}}
	case pid == 0 && ptrace && search:
		return []finding{{statusOK, check, fmt.Sprintf("%s may read every caller's executable and open files (%s)", held, tried), ""}}
	case ptrace && search:
		return []finding{{statusWarn, check, fmt.Sprintf("%s, yet %s: a security module (AppArmor, SELinux) or the /proc mount restricts it", held, tried),
			"allow ptrace read access in the security profile (AppArmor: ptrace read,), or mount /proc without hidepid"}}
	}
	return []finding{{statusWarn, check, fmt.Sprintf("%s may read the executable and open files of uid %d's processes only (%s): callers of other users are refused, and TCP loopback callers of other users are not found", held, d.uid, tried),
		fmt.Sprintf("run as root, or grant CAP_SYS_PTRACE (to read /proc/PID/exe) and CAP_DAC_READ_SEARCH (to list /proc/PID/fd): systemd AmbientCapabilities=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH; in a container run as uid 0 with its capabilities dropped to [SYS_PTRACE, DAC_READ_SEARCH], since a non-root container user gets no effective capability from capabilities.add; nothing to do when every caller runs as uid %d", d.uid)}}
}

// tcpLookup checks how the callers of TCP listeners will be found: with
// the BPF iterator, which the broker loads as this does, or by reading
// /proc/*/fd on every connection.
func (d doctorRun) tcpLookup() []finding {
	const check = "tcp lookup"
	lookup := unixattest.TCPLookupAuto
	if u := d.cfg.Attestors.Unix; u != nil && u.TCPLookup != "" {
		lookup = u.TCPLookup
	}
	if lookup == unixattest.TCPLookupProc {
		return []finding{{statusOK, check, "tcp_lookup proc: a TCP listener's callers are found by reading /proc/*/fd", ""}}
	}
	err := unixattest.ProbeBPF()
	if err == nil {
		return []finding{{statusOK, check, "the BPF iterator loads: a TCP listener's callers are found without reading /proc/*/fd", ""}}
	}
	const fix = "grant CAP_BPF and CAP_PERFMON (systemd AmbientCapabilities=CAP_BPF CAP_PERFMON; Kubernetes capabilities.add: [BPF, PERFMON]) on a kernel with BTF (/sys/kernel/btf/vmlinux)"
	if lookup == unixattest.TCPLookupBPF {
		return []finding{{statusFail, check, "tcp_lookup bpf, but the BPF iterator does not load (" + err.Error() + "): the broker will not start", fix + ", or set attestors.unix.tcp_lookup: proc"}}
	}
	tcp := 0
	for _, l := range d.cfg.Listeners {
		if network, _ := l.Listener.Network(); network != "unix" {
			tcp++
		}
	}
	if tcp == 0 {
		return []finding{{statusOK, check, "no TCP listener; the BPF iterator does not load here (" + err.Error() + ")", ""}}
	}
	return []finding{{statusWarn, check, fmt.Sprintf("the BPF iterator does not load (%s): the callers of %d TCP listeners are found by reading /proc/*/fd, about 1 ms per 500 open files on the machine for each connection", err, tcp), fix}}
}

func errText(err error) string {
	if err == nil {
		return "allowed"
	}
	if errors.Is(err, fs.ErrPermission) {
		return "permission denied"
	}
	return err.Error()
}

// effectiveCaps reads CapEff from /proc/self/status.
func effectiveCaps() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff line")
}

// probeOtherProcess reads the executable link of a process of another uid
// than uid, as the unix attestor does, and returns its pid, its uid and
// the outcome; pid 0 when no such process with an executable is visible.
func probeOtherProcess(uid int) (pid, owner int, exeErr, fdErr error) {
	entries, _ := os.ReadDir("/proc")
	for i, e := range entries {
		if i > 1<<14 {
			break
		}
		n, convErr := strconv.Atoi(e.Name())
		if convErr != nil || n == os.Getpid() {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name(), &st) != nil || int(st.Uid) == uid {
			continue
		}
		_, exeErr := os.Readlink("/proc/" + e.Name() + "/exe")
		if errors.Is(exeErr, fs.ErrNotExist) {
			continue // a kernel thread, or gone
		}
		_, fdErr := os.ReadDir("/proc/" + e.Name() + "/fd")
		return n, int(st.Uid), exeErr, fdErr
	}
	return 0, 0, nil, nil
}

// initPidNamespace is the inode of the initial PID namespace (the kernel's
// PROC_PID_INIT_INO).
const initPidNamespace = "pid:[4026531836]"

// pidNamespace checks that callers' processes are visible: the kernel
// reports a peer in a PID namespace the broker cannot see with pid 0, and
// the broker refuses it. In the host's namespace every process is visible;
// in a Kubernetes pod sharing its namespace, PID 1 is the pod's pause
// process. Otherwise the broker sees its own container only.
func (d doctorRun) pidNamespace() []finding {
	const check = "pid namespace"
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return []finding{{statusWarn, check, "cannot read /proc/self/ns/pid: " + err.Error(), ""}}
	}
	if self, err := os.Readlink("/proc/self"); err != nil || self != strconv.Itoa(os.Getpid()) {
		return []finding{{statusFail, check, fmt.Sprintf("/proc belongs to another PID namespace than the broker's %s (it is pid %d, /proc/self is %q): the unix attestor refuses to start, since /proc/PID would name other processes", ns, os.Getpid(), self),
			"mount a /proc of the broker's own PID namespace (unshare --pid --fork --mount-proc; a container runtime does it)"}}
	}
	if ns == initPidNamespace {
		return []finding{{statusOK, check, "the host's (" + ns + "): every caller's process is visible", ""}}
	}
	comm, _ := os.ReadFile("/proc/1/comm")
	first := strings.TrimSpace(string(comm))
	if first == "pause" {
		return []finding{{statusOK, check, ns + ", shared by the pod (PID 1 is the pause process): the other containers' processes are visible", ""}}
	}
	entries, _ := os.ReadDir("/proc")
	procs := 0
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			procs++
		}
	}
	return []finding{{statusWarn, check, fmt.Sprintf("%s, not the host's; PID 1 is %q and %d processes are visible: a caller in another container is seen with pid 0 and refused", ns, first, procs),
		"let the broker share its callers' PID namespace (Kubernetes: shareProcessNamespace: true; docker run --pid=container:APP or --pid=host); nothing to do when its callers run in its own container"}}
}

// attestors checks that each token attestor can get its keys: a JWKS file
// parses, a JWKS URL or OIDC discovery answers, the SPIFFE bundle or
// Workload API answers, the STS endpoint answers.
func (d doctorRun) attestors() []finding {
	var out []finding
	a := d.cfg.Attestors
	if k := a.Kubernetes; k != nil {
		out = append(out, d.kubernetes(k)...)
	}
	if g := a.GitHub; g != nil {
		issuer := g.Issuer
		if issuer == "" {
			issuer = githubattest.DefaultIssuer
		}
		out = append(out, d.remoteKeys("github attestor", oidc.RemoteConfig{Issuer: issuer, JWKSURL: g.JWKSURL}))
	}
	if sp := a.SPIFFE; sp != nil {
		ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
		att, err := spiffeattest.New(ctx, sp.config())
		cancel()
		source := sp.BundleFile
		if source == "" {
			source = sp.WorkloadAPI
		}
		if err != nil {
			out = append(out, finding{statusFail, "spiffe attestor", err.Error(), "check that " + source + " is readable (the bundle file) or answers (the Workload API) as uid " + strconv.Itoa(d.uid)})
		} else {
			att.Close()
			out = append(out, finding{statusOK, "spiffe attestor", "trust bundle from " + source, ""})
		}
	}
	if aws := a.AWS; aws != nil {
		ep := aws.STSEndpoint
		if ep == "" {
			ep = awsattest.DefaultSTSEndpoint
		}
		out = append(out, d.reachable("aws attestor", ep, http.DefaultTransport.(*http.Transport).Clone()))
	}
	if am := a.Ambient; am != nil {
		if b, err := os.ReadFile(am.TokenFile); err != nil || len(strings.TrimSpace(string(b))) == 0 {
			out = append(out, finding{statusFail, "ambient attestor", fmt.Sprintf("token file %s: %s", am.TokenFile, errText(orEmpty(err))), "mount the token at token_file, readable by uid " + strconv.Itoa(d.uid)})
		} else {
			out = append(out, finding{statusOK, "ambient attestor", "token file " + am.TokenFile + " is readable", ""})
		}
	}
	return out
}

func orEmpty(err error) error {
	if err == nil {
		return errors.New("empty")
	}
	return err
}

// kubernetes checks the kubernetes attestor's keys as it fetches them: from
// jwks_file, else jwks_url or discovery of the issuer, trusting ca_file
// and sending bearer_token_file's token to the issuer and API server; and
// the API server when token_review is on.
func (d doctorRun) kubernetes(k *KubernetesConfig) []finding {
	const check = "kubernetes attestor"
	c := k.config()
	if c.JWKSFile != "" {
		if _, err := oidc.NewFileKeys(c.JWKSFile, slog.New(slog.DiscardHandler)); err != nil {
			return []finding{{statusFail, check, err.Error(), "write the cluster's JWKS (kubectl get --raw /openid/v1/jwks) to " + c.JWKSFile}}
		}
		return []finding{{statusOK, check, "signing keys from " + c.JWKSFile, ""}}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		pool := x509.NewCertPool()
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			return []finding{{statusFail, check, fmt.Sprintf("ca_file %s: %s", c.CAFile, errText(orEmpty(err))), "point ca_file at the cluster's CA certificate (PEM)"}}
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	rc := oidc.RemoteConfig{Issuer: c.Issuer, JWKSURL: c.JWKSURL, HTTPClient: &http.Client{Transport: tr}}
	if file := c.BearerTokenFile; file != "" {
		rc.Header = func() (http.Header, error) {
			b, err := os.ReadFile(file)
			if err != nil {
				return nil, fmt.Errorf("bearer token file: %w", err)
			}
			return http.Header{"Authorization": {"Bearer " + strings.TrimSpace(string(b))}}, nil
		}
		if c.APIServer != "" {
			rc.HeaderOrigins = []string{c.APIServer}
		}
	}
	keys := d.remoteKeys(check, rc)
	if keys.status == statusFail && (strings.Contains(keys.msg, " 401 ") || strings.Contains(keys.msg, " 403 ")) {
		keys.fix = "the issuer refused the broker: bearer_token_file must hold the broker's own service-account token, which clusters serve discovery and keys to (or give jwks_file)"
	}
	out := []finding{keys}
	if c.TokenReview {
		out = append(out, d.reachable(check+" token review", c.APIServer, tr))
	}
	return out
}

// remoteKeys fetches an issuer's keys as the attestors do.
func (d doctorRun) remoteKeys(check string, rc oidc.RemoteConfig) finding {
	if rc.HTTPClient == nil {
		rc.HTTPClient = &http.Client{}
	}
	rc.Logger = slog.New(slog.DiscardHandler)
	source := rc.JWKSURL
	if source == "" {
		source = "discovery of " + rc.Issuer
	}
	keys, err := oidc.NewRemoteKeys(rc)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
		_, err = keys.Key(ctx, "")
		cancel()
	}
	if err != nil && !errors.Is(err, oidc.ErrUnknownKey) { // ErrUnknownKey: fetched, several keys
		return finding{statusFail, check, fmt.Sprintf("signing keys from %s: %v", source, err),
			"check that this machine reaches it (proxy, firewall, DNS) and trusts its certificate; or give jwks_url, or jwks_file"}
	}
	return finding{statusOK, check, "signing keys from " + source, ""}
}

// reachable checks that an HTTPS endpoint answers at all: any HTTP status
// will do, a connection or TLS failure will not.
func (d doctorRun) reachable(check, endpoint string, tr *http.Transport) finding {
	client := &http.Client{Transport: tr, Timeout: d.timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(endpoint)
	if err != nil {
		return finding{statusFail, check, fmt.Sprintf("%s does not answer: %v", endpoint, errors.Unwrap(err)), "check that this machine reaches it (proxy, firewall, DNS) and trusts its certificate"}
	}
	resp.Body.Close()
	return finding{statusOK, check, fmt.Sprintf("%s answers (%s)", endpoint, resp.Status), ""}
}

// upstreamInstallID stands for the install id while doctor builds the
// providers: a ping creates nothing upstream that it would mark.
const upstreamInstallID = "doctor"

// upstreams builds each credential's provider as run does and pings those
// with an upstream (the providers.Pinger run calls at start), concurrently,
// each within the timeout.
func (d doctorRun) upstreams() []finding {
	out := make([]finding, len(d.cfg.Credentials))
	var wg sync.WaitGroup
	for i, cc := range d.cfg.Credentials {
		check := fmt.Sprintf("credential %s (%s)", cc.Name, cc.Kind)
		kind := providerKinds[cc.Kind]
		p, err := kind.build(cc.Provider, buildContext{name: cc.Name, ttl: time.Duration(cc.TTL), installID: upstreamInstallID, log: slog.New(slog.DiscardHandler)})
		if err != nil {
			out[i] = finding{statusFail, check, err.Error(), "run `credbroker check` and fix the credential's section"}
			continue
		}
		pinger, ok := p.(providers.Pinger)
		if !ok {
			out[i] = finding{statusOK, check, "no upstream; its value was read", ""}
			closeProvider(p)
			continue
		}
		wg.Go(func() {
			defer closeProvider(p)
			ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
			defer cancel()
			if err := pinger.Ping(ctx); err != nil {
				out[i] = finding{statusFail, check, "upstream: " + err.Error(), "check that this machine reaches the upstream and that the broker's own credentials for it are valid; requests for this credential fail (503) until it answers"}
				return
			}
			out[i] = finding{statusOK, check, "upstream answers and accepts the broker's credentials", ""}
		})
	}
	wg.Wait()
	return slices.DeleteFunc(out, func(f finding) bool { return f.status == "" })
}

func closeProvider(p any) {
	if c, ok := p.(io.Closer); ok {
		_ = c.Close()
	}
}
