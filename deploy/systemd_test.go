package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// systemdDir holds the unit, its sysusers.d and tmpfiles.d entries and
// the example configuration, relative to the repository's top.
const systemdDir = "deploy/systemd"

// unitFile is a systemd unit file: each section's keys, each key's values
// in order (a key given twice has two).
type unitFile map[string]map[string][]string

// parseUnit reads a unit file as systemd does: [Section] headers,
// KEY=VALUE lines, comment lines beginning with # or ;, a backslash at the
// end of a line continuing it.
func parseUnit(text string) (unitFile, error) {
	u := unitFile{}
	section := ""
	var cont strings.Builder
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if cont.Len() == 0 && (line == "" || line[0] == '#' || line[0] == ';') {
			continue
		}
		if c, ok := strings.CutSuffix(line, `\`); ok {
			cont.WriteString(c + " ")
			continue
		}
		line = cont.String() + line
		cont.Reset()
		if strings.HasPrefix(line, "[") {
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("line %d: %q: a section header must end in ]", i+1, line)
			}
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			return nil, fmt.Errorf("line %d: %q: want KEY=VALUE in a section", i+1, line)
		}
		key = strings.TrimSpace(key)
		u[section][key] = append(u[section][key], strings.TrimSpace(value))
	}
	return u, nil
}

// get returns the last value of a key ("" when absent), the one systemd
// uses for single-valued settings.
func (u unitFile) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// list returns the words of every value of a list-valued key.
func (u unitFile) list(section, key string) []string {
	var out []string
	for _, v := range u[section][key] {
		out = append(out, strings.Fields(v)...)
	}
	return out
}

// loadUnit parses deploy/systemd/credbroker.service.
func loadUnit(t *testing.T) unitFile {
	t.Helper()
	u, err := parseUnit(readRepoFile(t, systemdDir+"/credbroker.service"))
	if err != nil {
		t.Fatalf("credbroker.service: %v", err)
	}
	return u
}

// exampleConfig is what the tests read of deploy/systemd/credbroker.yaml;
// `credbroker check` validates the whole of it.
type exampleConfig struct {
	Socket      string `yaml:"socket"`
	SocketMode  string `yaml:"socket_mode"`
	SocketGroup string `yaml:"socket_group"`
	Audit       struct {
		Path string `yaml:"path"`
	} `yaml:"audit"`
}

// loadExampleConfig reads the example configuration.
func loadExampleConfig(t *testing.T) exampleConfig {
	t.Helper()
	var c exampleConfig
	if err := yaml.Unmarshal([]byte(readRepoFile(t, systemdDir+"/credbroker.yaml")), &c); err != nil {
		t.Fatalf("credbroker.yaml: %v", err)
	}
	if c.Socket == "" || c.SocketMode == "" || c.SocketGroup == "" || c.Audit.Path == "" {
		t.Fatalf("credbroker.yaml leaves socket, socket_mode, socket_group or audit.path to their defaults: %+v", c)
	}
	return c
}

// TestSystemdUnitKeys checks what the unit must say, by parsing it, and
// that it agrees with the sysusers.d entry and the example configuration:
// the socket in the RuntimeDirectory, the audit log in the StateDirectory,
// the configuration in the ConfigurationDirectory, the socket's group one
// the broker is a member of, the sandboxing the issue lists, and the
// capabilities attestation needs (TestSystemdServiceRuns shows that each
// is needed and that together they suffice).
func TestSystemdUnitKeys(t *testing.T) {
	u := loadUnit(t)
	cfg := loadExampleConfig(t)
	users, groups := sysusersEntries(t)

	// The broker does not speak sd_notify: Type=notify would never start.
	notify := false
	filepath.WalkDir(repoRoot, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte("NOTIFY_SOCKET")) {
				notify = true
			}
		}
		return nil
	})
	if typ := u.get("Service", "Type"); notify != (typ == "notify") || !notify && typ != "exec" && typ != "simple" {
		t.Errorf("Type=%s, but the broker %s sd_notify", typ, map[bool]string{true: "speaks", false: "does not speak"}[notify])
	}

	exec := strings.Fields(u.get("Service", "ExecStart"))
	if len(exec) < 4 || filepath.Base(exec[0]) != "credbroker" || exec[1] != "run" || exec[2] != "--config" {
		t.Fatalf("ExecStart=%q: want /…/credbroker run --config /etc/credbroker/…", exec)
	}
	if confDir := "/etc/" + u.get("Service", "ConfigurationDirectory"); exec[3] != confDir && filepath.Dir(exec[3]) != confDir {
		t.Errorf("ExecStart's --config %s is not in the ConfigurationDirectory %s", exec[3], confDir)
	}
	if r := u.get("Service", "ExecReload"); !strings.Contains(r, "-HUP") || !strings.Contains(r, "$MAINPID") {
		t.Errorf("ExecReload=%s: the broker reloads its policies on SIGHUP", r)
	}

	user := u.get("Service", "User")
	if user == "" || user == "root" || !slices.Contains(users, user) || u.get("Service", "DynamicUser") == "yes" {
		t.Errorf("User=%s DynamicUser=%s: want a dedicated user that credbroker.sysusers.conf creates (%q)", user, u.get("Service", "DynamicUser"), users)
	}
	if g := u.get("Service", "Group"); g != "" && !slices.Contains(groups, g) && !slices.Contains(users, g) {
		t.Errorf("Group=%s is not created by credbroker.sysusers.conf", g)
	}
	if !slices.Contains(groups, cfg.SocketGroup) || !slices.Contains(u.list("Service", "SupplementaryGroups"), cfg.SocketGroup) {
		t.Errorf("the example's socket_group %q must be a group of credbroker.sysusers.conf (%q) and in SupplementaryGroups (%q): the broker may give the socket only a group it is in",
			cfg.SocketGroup, groups, u.list("Service", "SupplementaryGroups"))
	}
	if cfg.SocketMode != "0660" {
		t.Errorf("socket_mode %s: the example lets the group connect with 0660", cfg.SocketMode)
	}
	if d := "/run/" + u.get("Service", "RuntimeDirectory"); filepath.Dir(cfg.Socket) != d {
		t.Errorf("the socket %s is not in the RuntimeDirectory %s", cfg.Socket, d)
	}
	if d := "/var/lib/" + u.get("Service", "StateDirectory"); filepath.Dir(cfg.Audit.Path) != d || u.get("Service", "StateDirectoryMode") != "0700" {
		t.Errorf("the audit log %s is not in the StateDirectory %s of mode 0700 (StateDirectoryMode=%s)", cfg.Audit.Path, d, u.get("Service", "StateDirectoryMode"))
	}

	for key, want := range map[string]string{
		"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
		"NoNewPrivileges": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
		"ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "ProtectClock": "yes",
		"ProtectHostname": "yes", "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
		"RestrictNamespaces": "yes", "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes",
		"SystemCallArchitectures": "native", "SystemCallFilter": "@system-service",
	} {
		if got := u.get("Service", key); got != want {
			t.Errorf("%s=%s, want %s", key, got, want)
		}
	}
	// Hiding the processes the broker cannot ptrace-read protects nothing
	// when it has CAP_SYS_PTRACE, and a user namespace of its own would cut
	// its capabilities off from the callers.
	if p := u.get("Service", "ProtectProc"); p != "" && p != "default" {
		t.Errorf("ProtectProc=%s", p)
	}
	if p := u.get("Service", "PrivateUsers"); p != "" && p != "no" {
		t.Errorf("PrivateUsers=%s", p)
	}
	families := u.list("Service", "RestrictAddressFamilies")
	slices.Sort(families)
	if want := []string{"AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"}; !slices.Equal(families, want) {
		t.Errorf("RestrictAddressFamilies=%q, want %q (AF_NETLINK: the kernel's socket table, for TCP attestation)", families, want)
	}
	bounding, ambient := u.list("Service", "CapabilityBoundingSet"), u.list("Service", "AmbientCapabilities")
	slices.Sort(bounding)
	slices.Sort(ambient)
	if want := unitCaps; !slices.Equal(bounding, want) || !slices.Equal(ambient, want) {
		t.Errorf("CapabilityBoundingSet=%q AmbientCapabilities=%q, want both %q", bounding, ambient, want)
	}
}

// unitCaps are the capabilities the unit gives the broker, sorted.
var unitCaps = []string{"CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"}

// sysusersEntries returns the users and groups credbroker.sysusers.conf
// creates.
func sysusersEntries(t *testing.T) (users, groups []string) {
	t.Helper()
	for _, line := range strings.Split(readRepoFile(t, systemdDir+"/credbroker.sysusers.conf"), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch f[0] {
		case "u":
			users = append(users, f[1])
		case "g":
			groups = append(groups, f[1])
		}
	}
	return users, groups
}

// TestParseUnit holds parseUnit to the unit syntax systemd reads.
func TestParseUnit(t *testing.T) {
	u, err := parseUnit("# c\n[Unit]\nDescription=x y\n\n[Service]\n; c\nA=1 \\\n  2\nA=3\n")
	if err != nil {
		t.Fatal(err)
	}
	if u.get("Unit", "Description") != "x y" || !slices.Equal(u.list("Service", "A"), []string{"1", "2", "3"}) || u.get("Service", "A") != "3" {
		t.Errorf("%v", u)
	}
	for _, bad := range []string{"A=1\n", "[Unit\n", "[Unit]\nnokey\n"} {
		if _, err := parseUnit(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// lookPath returns a command's path, failing the test with the Debian
// package to install when it is missing (scripts/test.sh installs them).
func lookPath(t *testing.T, cmd, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(cmd)
	if err != nil {
		t.Fatalf("%s is not installed: apt-get install %s (scripts/test.sh does)", cmd, pkg)
	}
	return p
}

// TestSystemdAnalyzeVerify runs systemd-analyze verify on the unit, with
// ExecStart pointing at a freshly built binary (verify checks that the
// command exists), and fails on any complaint: verify exits 0 on unknown
// keys and bad values, printing them. It also asks systemd-analyze
// security for the unit's exposure, which must stay at 3.0 or below
// (its --threshold counts tenths): "OK" is below 4.9, and the unit scores
// 2.2 with its two capabilities.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze := lookPath(t, "systemd-analyze", "systemd")
	bin := credbrokerBinary(t)
	unit := readRepoFile(t, systemdDir+"/credbroker.service")
	exec0 := strings.Fields(loadUnit(t).get("Service", "ExecStart"))[0]
	dir := t.TempDir()
	path := filepath.Join(dir, "credbroker.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(unit, exec0, bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(analyze, "security", "--offline=true", "--threshold=30", path).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security --threshold=30: %v\n%s", err, out)
	}
	if m := regexp.MustCompile(`Overall exposure level for credbroker.service: ([0-9.]+)`).FindSubmatch(out); m == nil {
		t.Errorf("systemd-analyze security gave no exposure level:\n%s", out)
	} else {
		t.Logf("exposure level %s", m[1])
	}
}

// hostRoot makes a directory to install the sysusers.d and tmpfiles.d
// entries into as into this host: a copy of the host's user and group
// databases (so that the ids chosen are free here), the entries applied by
// systemd-sysusers and systemd-tmpfiles --root. It returns the directory,
// the credbroker user's uid and gid, and the gids of the groups created.
func hostRoot(t *testing.T) (root string, uid, gid int, gids map[string]int) {
	t.Helper()
	sysusers := lookPath(t, "systemd-sysusers", "systemd")
	tmpfiles := lookPath(t, "systemd-tmpfiles", "systemd")
	root = t.TempDir()
	for _, d := range []string{"etc/sysusers.d", "etc/tmpfiles.d"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"passwd", "group"} {
		b, err := os.ReadFile("/etc/" + f)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(root, "etc", f), b, 0o644)
	}
	for src, dst := range map[string]string{
		"credbroker.sysusers.conf": "etc/sysusers.d/credbroker.conf",
		"credbroker.tmpfiles.conf": "etc/tmpfiles.d/credbroker.conf",
	} {
		os.WriteFile(filepath.Join(root, dst), []byte(readRepoFile(t, systemdDir+"/"+src)), 0o644)
	}
	if out, err := exec.Command(sysusers, "--root="+root).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	if out, err := exec.Command(tmpfiles, "--root="+root, "--create").CombinedOutput(); err != nil {
		t.Fatalf("systemd-tmpfiles --create: %v\n%s", err, out)
	}
	ids := func(file string) map[string][2]int {
		m := map[string][2]int{}
		b, _ := os.ReadFile(filepath.Join(root, "etc", file))
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Split(line, ":")
			if len(f) >= 4 {
				a, _ := strconv.Atoi(f[2])
				b, _ := strconv.Atoi(f[3])
				m[f[0]] = [2]int{a, b}
			}
		}
		return m
	}
	users, groups := ids("passwd"), ids("group")
	u, ok := users["credbroker"]
	if !ok {
		t.Fatal("systemd-sysusers made no credbroker user")
	}
	gids = map[string]int{}
	_, names := sysusersEntries(t)
	for _, g := range append(names, "credbroker") {
		e, ok := groups[g]
		if !ok {
			t.Fatalf("systemd-sysusers made no group %s", g)
		}
		gids[g] = e[0]
	}
	return root, u[0], u[1], gids
}

// TestSystemdInstall applies the sysusers.d and tmpfiles.d entries to a
// copy of this host's databases and checks what they make: the broker's
// user and groups, and the configuration directories the tmpfiles entry
// promises — secrets readable by the broker's group only.
func TestSystemdInstall(t *testing.T) {
	root, uid, gid, gids := hostRoot(t)
	if uid == 0 || gid == 0 || gids["credbroker"] != gid {
		t.Errorf("credbroker is uid %d gid %d, its group %d", uid, gid, gids["credbroker"])
	}
	for dir, want := range map[string]struct {
		mode os.FileMode
		gid  int
	}{
		"etc/credbroker":          {0o755, 0},
		"etc/credbroker/policies": {0o755, 0},
		"etc/credbroker/secrets":  {0o750, gid},
	} {
		fi, err := os.Stat(filepath.Join(root, dir))
		if err != nil {
			t.Error(err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !fi.IsDir() || fi.Mode().Perm() != want.mode || st.Uid != 0 || int(st.Gid) != want.gid {
			t.Errorf("/%s: %v uid %d gid %d; want a directory %v root:%d", dir, fi.Mode(), st.Uid, st.Gid, want.mode, want.gid)
		}
	}
}

// TestSystemdExampleConfigChecks runs `credbroker check` on the example
// configuration as the broker's user will, on a host where the sysusers.d
// entry was applied: /etc/group is, in a mount namespace of the check's
// own, the one systemd-sysusers wrote, so that socket_group resolves. The
// secret is a file the test writes where the example names it.
func TestSystemdExampleConfigChecks(t *testing.T) {
	requireRootFor(t, "bind-mounts the /etc/group systemd-sysusers wrote, in a mount namespace of its own")
	root, uid, gid, _ := hostRoot(t)
	conf := copyExample(t, t.TempDir())
	cmd := inHost(root, credbrokerBinary(t), "check", "--config", filepath.Join(conf, "credbroker.yaml"),
		"--broker-uid", strconv.Itoa(uid), "--broker-gid", strconv.Itoa(gid))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok: 1 credentials") {
		t.Fatalf("credbroker check: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "warning") {
		t.Errorf("credbroker check warns:\n%s", out)
	}
}

// requireRootFor fails the test when it does not run as root.
func requireRootFor(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test needs root: it %s", why)
	}
}

// inHost returns a command that runs name with args in a mount namespace
// where /etc/group and /etc/passwd are root's.
func inHost(root, name string, args ...string) *exec.Cmd {
	script := `mount --bind "$1/etc/group" /etc/group && mount --bind "$1/etc/passwd" /etc/passwd && shift && exec "$@"`
	return exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", script, "sh", root, name}, args...)...)
}

// exampleSecret is the stand-in for the partner's API token the tests
// install where the example configuration names it.
const exampleSecret = "example-partner-token-0123456789"

// copyExample copies the example configuration and policies into dir and
// writes the secret it names; it returns the configuration's directory
// (dir/etc/credbroker), which is what /etc/credbroker holds on a host.
func copyExample(t *testing.T, dir string) string {
	t.Helper()
	conf := filepath.Join(dir, "etc", "credbroker")
	for _, d := range []string{"policies", "secrets"} {
		if err := os.MkdirAll(filepath.Join(conf, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src := filepath.Join(repoRoot, systemdDir)
	files, _ := filepath.Glob(filepath.Join(src, "policies", "*.yaml"))
	files = append(files, filepath.Join(src, "credbroker.yaml"))
	for _, f := range files {
		rel, _ := filepath.Rel(src, f)
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(conf, rel), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m := regexp.MustCompile(`static: \{file: ([^}\s]+)\}`).FindStringSubmatch(readRepoFile(t, systemdDir+"/credbroker.yaml"))
	if m == nil {
		t.Fatal("credbroker.yaml names no secret file")
	}
	if err := os.WriteFile(filepath.Join(conf, m[1]), []byte(exampleSecret), 0o640); err != nil {
		t.Fatal(err)
	}
	return conf
}

// The ids of the test's callers: a user in the socket's group, and one
// outside it. Neither needs a name.
const (
	clientUID   = 4242
	outsiderUID = 4243
)

// serviceRun is the broker run as the unit runs it.
type serviceRun struct {
	cmd      *exec.Cmd
	log      *lockedBuffer
	socket   string
	listener string // the http listener's address
	done     chan error
}

// startService runs the example configuration's broker as the unit would:
// as the credbroker user and group that systemd-sysusers made, with the
// unit's SupplementaryGroups and UMask, no new privileges, and caps as its
// bounding, inheritable and ambient sets; its socket and audit directories
// made as RuntimeDirectory= and StateDirectory= make them. The listener
// forwards to upstream instead of the partner's API.
func startService(t *testing.T, caps []string, upstream string) *serviceRun {
	t.Helper()
	u := loadUnit(t)
	root, uid, gid, gids := hostRoot(t)
	// The broker's user must reach every file: a directory of root's that
	// others may search, as /etc, /run and /var/lib are.
	base, err := os.MkdirTemp("", "credbroker-unit-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	conf := copyExample(t, base)
	secrets := filepath.Join(conf, "secrets")
	os.Chown(secrets, 0, gids["credbroker"])
	os.Chmod(secrets, 0o750)
	entries, _ := os.ReadDir(secrets)
	for _, e := range entries {
		os.Chown(filepath.Join(secrets, e.Name()), 0, gids["credbroker"])
	}
	cfgPath := filepath.Join(conf, "credbroker.yaml")
	cfg, _ := os.ReadFile(cfgPath)
	edited := regexp.MustCompile(`listen: 127\.0\.0\.1:\d+`).ReplaceAll(cfg, []byte("listen: 127.0.0.1:0"))
	edited = regexp.MustCompile(`upstream: https://\S+`).ReplaceAll(edited, []byte("upstream: "+upstream))
	if bytes.Equal(edited, cfg) || !bytes.Contains(edited, []byte(upstream)) {
		t.Fatal("credbroker.yaml's http listener was not found to point it at the test's upstream")
	}
	os.WriteFile(cfgPath, edited, 0o644)
	// The test's client may use partner-api, as the example's billing
	// service may.
	os.WriteFile(filepath.Join(conf, "policies", "test-client.yaml"), []byte(fmt.Sprintf(
		"policies:\n  - {name: test-client, effect: allow, workloads: [{unix: {uid: %d}}], credentials: [partner-api]}\n", clientUID)), 0o644)

	mkdir := func(name, mode string) string {
		p := filepath.Join(base, name)
		m, _ := strconv.ParseUint(mode, 8, 32)
		if err := os.Mkdir(p, os.FileMode(m)); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, os.FileMode(m))
		os.Chown(p, uid, gid)
		return p
	}
	run := mkdir("run", u.get("Service", "RuntimeDirectoryMode"))
	state := mkdir("state", u.get("Service", "StateDirectoryMode"))
	binDir := filepath.Join(base, "bin")
	os.Mkdir(binDir, 0o755)
	bin := filepath.Join(binDir, "credbroker")
	if b, err := os.ReadFile(credbrokerBinary(t)); err != nil || os.WriteFile(bin, b, 0o755) != nil {
		t.Fatal("cannot copy the binary")
	}

	var supp []string
	for _, g := range u.list("Service", "SupplementaryGroups") {
		supp = append(supp, strconv.Itoa(gids[g]))
	}
	var capList []string
	for _, c := range caps {
		capList = append(capList, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	setpriv := []string{lookPath(t, "setpriv", "util-linux"),
		"--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(gid), "--groups=" + strings.Join(supp, ","),
		"--bounding-set=" + strings.Join(append([]string{"-all"}, capList...), ","),
		"--inh-caps=" + strings.Join(append([]string{"-all"}, capList...), ","),
		"--ambient-caps=" + strings.Join(append([]string{"-all"}, capList...), ","),
		"--no-new-privs"}
	if u.get("Service", "NoNewPrivileges") != "yes" {
		setpriv = setpriv[:len(setpriv)-1]
	}
	umask := u.get("Service", "UMask")
	socket := filepath.Join(run, "broker.sock")
	args := append(setpriv, "sh", "-c", "umask "+umask+" && exec \"$@\"", "sh", bin, "run", "--config", cfgPath,
		"--socket", socket, "--audit-db", filepath.Join(state, "audit.db"),
		"--checkpoint", filepath.Join(state, "checkpoint.json"), "--admin", "127.0.0.1:0")
	s := launch(t, inHost(root, args[0], args[1:]...))
	s.socket = socket
	if s.listener == "" {
		t.Fatalf("the broker logged no http listener's address:\n%s", s.log)
	}
	return s
}

// lockedBuffer is a bytes.Buffer safe for a writer and readers in other
// goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// launch starts cmd, a `credbroker run` logging JSON lines to its
// standard error, and returns once it logs "credbroker serving", which it
// does once every listener is up, with the http listener's address if it
// logged one. The broker is stopped with SIGTERM at the test's end.
func launch(t *testing.T, cmd *exec.Cmd) *serviceRun {
	t.Helper()
	s := &serviceRun{cmd: cmd, log: &lockedBuffer{}, done: make(chan error, 1)}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-s.done
	})
	lines := make(chan map[string]any)
	go func() {
		sc := bufio.NewScanner(io.TeeReader(stderr, s.log))
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				lines <- m
			}
		}
		close(lines)
		s.done <- cmd.Wait()
	}()
	deadline := time.After(time.Minute)
	for {
		select {
		case m, ok := <-lines:
			if !ok {
				t.Fatalf("the broker exited before serving:\n%s", s.log)
			}
			if m["msg"] == "http listening" {
				s.listener, _ = m["addr"].(string)
			}
			if m["msg"] == "credbroker serving" {
				go func() {
					for range lines {
					}
				}()
				return s
			}
		case <-deadline:
			t.Fatalf("the broker did not serve within a minute:\n%s", s.log)
		}
	}
}

// asUser runs name with args as uid (gid the same) with the given
// supplementary groups and no capabilities, and returns its output and
// exit status.
func asUser(t *testing.T, uid int, groups []int, name string, args ...string) (string, error) {
	t.Helper()
	g := "--clear-groups"
	if len(groups) > 0 {
		var s []string
		for _, id := range groups {
			s = append(s, strconv.Itoa(id))
		}
		g = "--groups=" + strings.Join(s, ",")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "setpriv", append([]string{"--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(uid), g, "--inh-caps=-all", name}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestSystemdServiceRuns runs the example configuration's broker with the
// unit's user, groups, umask and capabilities (setpriv, in place of
// systemd, which does not run here) and drives it as the unit's users
// would:
//
//   - a user in the socket's group fetches partner-api over the socket API,
//     attested although it runs as another uid than the broker;
//   - the same user calls the http listener, which finds it through the
//     kernel's socket table and adds the token on the way to the upstream;
//   - a user outside the group cannot connect to the socket at all;
//   - the socket has the example's mode and group.
//
// Then it runs the broker again without each of the unit's capabilities
// in turn: every one is needed, since one of the two callers is then
// refused (401). Together with the first run, the unit's set is what
// attestation needs, no more.
func TestSystemdServiceRuns(t *testing.T) {
	requireRootFor(t, "runs the broker as the unit's user with its capabilities, and clients as other users")
	lookPath(t, "curl", "curl")
	var mu sync.Mutex
	var got []string // the Authorization headers the upstream received
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization"))
		mu.Unlock()
		fmt.Fprintln(w, "upstream reached")
	}))
	defer upstream.Close()
	cfg := loadExampleConfig(t)

	// tryBoth fetches over the socket and calls the listener as the
	// client, and returns what each answered.
	tryBoth := func(s *serviceRun, gids map[string]int) (socket, listener string, socketErr, listenerErr error) {
		bin := filepath.Join(filepath.Dir(filepath.Dir(s.socket)), "bin", "credbroker")
		socket, socketErr = asUser(t, clientUID, []int{gids[cfg.SocketGroup]}, bin, "get", "partner-api", "--socket", s.socket)
		listener, listenerErr = asUser(t, clientUID, []int{gids[cfg.SocketGroup]}, "curl", "-sS", "--fail-with-body", "http://"+s.listener+"/v1/ping")
		return
	}

	_, _, _, gids := hostRoot(t)
	s := startService(t, unitCaps, upstream.URL)
	socketOut, listenerOut, socketErr, listenerErr := tryBoth(s, gids)
	if socketErr != nil || !strings.Contains(socketOut, `"value":"`+exampleSecret+`"`) {
		t.Errorf("the client in %s fetching over the socket: %v\n%s\n%s", cfg.SocketGroup, socketErr, socketOut, s.log)
	}
	mu.Lock()
	if listenerErr != nil || !strings.Contains(listenerOut, "upstream reached") || !slices.Equal(got, []string{"Bearer " + exampleSecret}) {
		t.Errorf("the client calling the http listener: %v, the upstream received %q\n%s\n%s", listenerErr, got, listenerOut, s.log)
	}
	mu.Unlock()
	if out, err := asUser(t, outsiderUID, nil, filepath.Join(filepath.Dir(filepath.Dir(s.socket)), "bin", "credbroker"), "get", "partner-api", "--socket", s.socket); err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("a user outside %s connecting to the socket: %v\n%s", cfg.SocketGroup, err, out)
	}
	fi, err := os.Stat(s.socket)
	if err != nil {
		t.Fatal(err)
	}
	mode, _ := strconv.ParseUint(cfg.SocketMode, 8, 32)
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != os.FileMode(mode) || int(st.Gid) != gids[cfg.SocketGroup] {
		t.Errorf("the socket is %v gid %d; want %s gid %d (%s)", fi.Mode().Perm(), st.Gid, cfg.SocketMode, gids[cfg.SocketGroup], cfg.SocketGroup)
	}

	for _, drop := range unitCaps {
		t.Run("without "+drop, func(t *testing.T) {
			s := startService(t, slices.DeleteFunc(slices.Clone(unitCaps), func(c string) bool { return c == drop }), upstream.URL)
			socketOut, listenerOut, socketErr, listenerErr := tryBoth(s, gids)
			refused := func(out string, err error) bool { return err != nil && strings.Contains(out, "unauthenticated") }
			if !refused(socketOut, socketErr) && !refused(listenerOut, listenerErr) {
				t.Errorf("without %s the client is still served: %s is not needed\nsocket: %s\nlistener: %s", drop, drop, socketOut, listenerOut)
			}
			t.Logf("without %s:\nsocket: %s\nlistener: %s", drop, strings.TrimSpace(socketOut), strings.TrimSpace(listenerOut))
		})
	}
}
