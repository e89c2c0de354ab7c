package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	yaml "go.yaml.in/yaml/v3"
	kjson "sigs.k8s.io/json"
)

// The ECS example's files.
const (
	ecsDir            = "deploy/ecs"
	ecsTaskDefinition = ecsDir + "/task-definition.json"
	ecsDockerfile     = ecsDir + "/Dockerfile"
)

// dockerDefaultCaps is the capability set Docker, and so ECS, gives a
// container unless its definition drops some: moby's
// oci/caps.DefaultCapabilities.
var dockerDefaultCaps = []string{
	"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
	"NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}

// decodeTaskDefinition decodes a task definition, the input of
// RegisterTaskDefinition as `aws ecs register-task-definition
// --cli-input-json` takes it, into aws-sdk-go-v2's type, strictly: every
// member name must be one of the API's (spelt as the API spells it, case
// included), no member may repeat, and every enum value must be one the
// API lists.
func decodeTaskDefinition(b []byte) (*ecs.RegisterTaskDefinitionInput, error) {
	var raw any
	strict, err := kjson.UnmarshalStrict(b, &raw)
	if err != nil {
		return nil, err
	}
	if err := errors.Join(strict...); err != nil {
		return nil, err
	}
	if err := errors.Join(checkAWSShape(raw, reflect.TypeFor[ecs.RegisterTaskDefinitionInput](), "")...); err != nil {
		return nil, err
	}
	var in ecs.RegisterTaskDefinitionInput
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, err
	}
	return &in, nil
}

// checkAWSShape walks decoded JSON beside the Go type an AWS SDK generates
// for it. The SDK's types carry no JSON tags: a member's JSON name is its
// field's name with the first letter lowered, so encoding/json, which
// matches names without regard to case and ignores unknown members, would
// take a misspelt member silently. Enum types (string types with a Values
// method) must hold one of their values.
func checkAWSShape(v any, t reflect.Type, at string) []error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if v == nil {
		return nil
	}
	var errs []error
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return []error{fmt.Errorf("%s: want an object", at)}
		}
		for k, e := range m {
			if k == "" {
				errs = append(errs, fmt.Errorf("%s: an empty member name", at))
				continue
			}
			name := string(unicode.ToUpper(rune(k[0]))) + k[1:]
			f, ok := t.FieldByName(name)
			if !ok || !f.IsExported() || k[0] == byte(unicode.ToUpper(rune(k[0]))) {
				errs = append(errs, fmt.Errorf("%s: unknown member %q of %s", at, k, t.Name()))
				continue
			}
			errs = append(errs, checkAWSShape(e, f.Type, strings.TrimPrefix(at+"."+k, "."))...)
		}
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			return []error{fmt.Errorf("%s: want a list", at)}
		}
		for i, e := range l {
			errs = append(errs, checkAWSShape(e, t.Elem(), fmt.Sprintf("%s[%d]", at, i))...)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return []error{fmt.Errorf("%s: want an object", at)}
		}
		for k, e := range m {
			errs = append(errs, checkAWSShape(e, t.Elem(), at+"."+k)...)
		}
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			return []error{fmt.Errorf("%s: want a string", at)}
		}
		if values := reflect.Zero(t).MethodByName("Values"); values.IsValid() {
			var allowed []string
			for _, a := range values.Call(nil)[0].Seq2() {
				allowed = append(allowed, a.String())
			}
			if !slices.Contains(allowed, s) {
				errs = append(errs, fmt.Errorf("%s: %q is not a %s (%s)", at, s, t.Name(), strings.Join(allowed, ", ")))
			}
		}
	}
	return errs
}

// ecsConfig is the part of the broker's configuration the ECS checks read;
// credbroker check validates the whole.
type ecsConfig struct {
	Socket      string `yaml:"socket"`
	SocketGroup string `yaml:"socket_group"`
	Admin       string `yaml:"admin"`
	Audit       struct {
		Path string `yaml:"path"`
	} `yaml:"audit"`
	Policies    string `yaml:"policies"`
	Credentials []struct {
		Name   string `yaml:"name"`
		Static *struct {
			Env  string `yaml:"env"`
			File string `yaml:"file"`
		} `yaml:"static"`
		AWSSTS *struct {
			RoleARN  string `yaml:"role_arn"`
			Endpoint string `yaml:"endpoint"`
		} `yaml:"aws_sts"`
	} `yaml:"credentials"`
	Listeners []map[string]struct {
		Listen     string `yaml:"listen"`
		Credential string `yaml:"credential"`
		Token      string `yaml:"token"`
	} `yaml:"listeners"`
}

// ecsExample is the ECS example read whole: the task definition, its two
// containers, and the broker's configuration and policies as its image
// holds them.
type ecsExample struct {
	td          *ecs.RegisterTaskDefinitionInput
	broker, app ecstypes.ContainerDefinition
	configPath  string // --config, as the image holds it
	configFile  string // the file of this repository the image copies there
	config      ecsConfig
	policies    policyFile
}

// readECSExample reads and decodes the example's files and finds the
// configuration the broker's command names among the files the Dockerfile
// copies into the image.
func readECSExample(t *testing.T) *ecsExample {
	t.Helper()
	td, err := decodeTaskDefinition([]byte(readRepoFile(t, ecsTaskDefinition)))
	if err != nil {
		t.Fatalf("%s: %v", ecsTaskDefinition, err)
	}
	x := &ecsExample{td: td}
	var found int
	for _, c := range td.ContainerDefinitions {
		switch name := deref(c.Name); name {
		case kubeBrokerContainer:
			x.broker = c
			found++
		case "app":
			x.app = c
			found++
		default:
			t.Errorf("container %q: the example has credbroker and app only", name)
		}
	}
	if found != 2 {
		t.Fatalf("%s: want containers credbroker and app", ecsTaskDefinition)
	}
	cmd := x.broker.Command
	for i, a := range cmd {
		if a == "--config" && i+1 < len(cmd) {
			x.configPath = cmd[i+1]
		}
	}
	if x.configPath == "" {
		t.Fatalf("the broker's command %q has no --config", cmd)
	}
	copies := dockerfileCopies(t, ecsDockerfile)
	x.configFile = copies[x.configPath]
	if x.configFile == "" {
		t.Fatalf("--config %s: %s copies no file there (it copies %v)", x.configPath, ecsDockerfile, copies)
	}
	if err := yaml.Unmarshal([]byte(readRepoFile(t, x.configFile)), &x.config); err != nil {
		t.Fatalf("%s: %v", x.configFile, err)
	}
	pol := path.Join(path.Dir(x.configPath), x.config.Policies)
	if copies[pol] == "" {
		t.Fatalf("policies %s: %s copies no file there", pol, ecsDockerfile)
	}
	if err := yaml.Unmarshal([]byte(readRepoFile(t, copies[pol])), &x.policies); err != nil {
		t.Fatalf("%s: %v", copies[pol], err)
	}
	return x
}

// dockerfileCopies maps each path a Dockerfile's COPY instructions (from
// the build context, which is the Dockerfile's directory) put in the image
// to the file of this repository it comes from.
func dockerfileCopies(t *testing.T, name string) map[string]string {
	t.Helper()
	copies := map[string]string{}
	for _, line := range strings.Split(readRepoFile(t, name), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || !strings.EqualFold(f[0], "COPY") {
			continue
		}
		var args []string
		for _, a := range f[1:] {
			if !strings.HasPrefix(a, "--") {
				args = append(args, a)
			}
		}
		dst := args[len(args)-1]
		for _, src := range args[:len(args)-1] {
			p := dst
			if strings.HasSuffix(dst, "/") {
				p = dst + path.Base(src)
			}
			copies[p] = path.Join(path.Dir(name), src)
		}
	}
	return copies
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

// ecsEnv returns a container's environment variable and whether it is set.
func ecsEnv(c ecstypes.ContainerDefinition, name string) (string, bool) {
	for _, kv := range c.Environment {
		if deref(kv.Name) == name {
			return deref(kv.Value), true
		}
	}
	return "", false
}

// ecsUser parses a container's "user" ("uid" or "uid:gid", numeric).
func ecsUser(t *testing.T, c ecstypes.ContainerDefinition) (uid, gid int64) {
	t.Helper()
	u, g, _ := strings.Cut(deref(c.User), ":")
	uid, err := strconv.ParseInt(u, 10, 64)
	if err != nil {
		t.Fatalf("container %s: user %q: want a numeric uid[:gid] (policies and the image have no names)", deref(c.Name), deref(c.User))
	}
	gid = -1
	if g != "" {
		if gid, err = strconv.ParseInt(g, 10, 64); err != nil {
			t.Fatalf("container %s: user %q: want a numeric gid", deref(c.Name), deref(c.User))
		}
	}
	return uid, gid
}

// ecsMountOf returns the container's mount point under which p lies (the
// deepest), or nil.
func ecsMountOf(c ecstypes.ContainerDefinition, p string) *ecstypes.MountPoint {
	var best *ecstypes.MountPoint
	for i, m := range c.MountPoints {
		mp := strings.TrimSuffix(deref(m.ContainerPath), "/")
		if (p == mp || strings.HasPrefix(p, mp+"/")) && (best == nil || len(mp) > len(deref(best.ContainerPath))) {
			best = &c.MountPoints[i]
		}
	}
	return best
}

// effectiveCaps returns the capabilities a root process of the container
// holds: Docker's default set, less drop, plus add ("ALL" drops all).
func effectiveCaps(c ecstypes.ContainerDefinition) []string {
	caps := slices.Clone(dockerDefaultCaps)
	if lp := c.LinuxParameters; lp != nil && lp.Capabilities != nil {
		for _, d := range lp.Capabilities.Drop {
			if d == "ALL" {
				caps = nil
			}
			caps = slices.DeleteFunc(caps, func(c string) bool { return c == d })
		}
		for _, a := range lp.Capabilities.Add {
			if !slices.Contains(caps, a) {
				caps = append(caps, a)
			}
		}
	}
	slices.Sort(caps)
	return caps
}

// TestECSTaskDefinition decodes the task definition strictly into
// aws-sdk-go-v2's RegisterTaskDefinitionInput and checks its wiring with
// the broker's configuration: the socket volume in both containers, the
// app waiting for the broker to be HEALTHY, a health check the image can
// run, the app's AWS SDKs wired to the broker's container-credentials
// endpoint, the secrets in the broker's container only, the privileges, and
// the configuration, as the image holds it, passing credbroker check.
func TestECSTaskDefinition(t *testing.T) {
	x := readECSExample(t)
	td := x.td
	b, app := x.broker, x.app

	if td.PidMode != ecstypes.PidModeTask {
		t.Errorf("pidMode %q: want task, so that the broker sees the app's processes", td.PidMode)
	}
	if td.NetworkMode != ecstypes.NetworkModeAwsvpc {
		t.Errorf("networkMode %q: want awsvpc, one loopback for the task", td.NetworkMode)
	}
	if deref(td.TaskRoleArn) == "" {
		t.Error("no taskRoleArn: the task role is the evidence callers present")
	}
	if !deref(b.Essential) || !deref(app.Essential) {
		t.Error("both containers must be essential: the app cannot run without its broker")
	}

	// Startup order and the health check.
	var depends bool
	var have []string
	for _, d := range app.DependsOn {
		have = append(have, deref(d.ContainerName)+" "+string(d.Condition))
		if deref(d.ContainerName) == kubeBrokerContainer && d.Condition == ecstypes.ContainerConditionHealthy {
			depends = true
		}
	}
	if !depends {
		t.Errorf("app: want dependsOn [{containerName: credbroker, condition: HEALTHY}], have %v", have)
	}
	hc := b.HealthCheck
	if hc == nil || len(hc.Command) < 3 {
		t.Fatal("the broker has no healthCheck: dependsOn HEALTHY would never be met")
	}
	if hc.Command[0] != "CMD" || hc.Command[1] != "/usr/local/bin/credbroker" {
		t.Errorf("healthCheck %q: want [CMD /usr/local/bin/credbroker …]: the image has no shell (CMD-SHELL) and its binary is /usr/local/bin/credbroker", hc.Command)
	}
	if !strings.Contains(readRepoFile(t, "Dockerfile"), "/usr/local/bin/credbroker") {
		t.Error("the image's Dockerfile no longer installs /usr/local/bin/credbroker, which the healthCheck runs")
	}
	if hc.Command[2] == "get" {
		var names []string
		for _, c := range x.config.Credentials {
			names = append(names, c.Name)
		}
		if len(hc.Command) < 4 || !slices.Contains(names, hc.Command[3]) {
			t.Errorf("healthCheck %q gets a credential the configuration lacks (it has %v)", hc.Command, names)
		}
		if i := slices.Index(hc.Command, "--socket"); i < 0 || i+1 >= len(hc.Command) || hc.Command[i+1] != x.config.Socket {
			t.Errorf("healthCheck %q: want --socket %s, the configuration's", hc.Command, x.config.Socket)
		}
	}
	if to := deref(hc.Timeout); to < 2 || to > deref(hc.Interval) {
		t.Errorf("healthCheck timeout %ds: want between 2s and the interval", to)
	}

	// The socket: one task volume, writable in the broker, read-only in
	// the app, at the same path, which CREDBROKER_SOCKET names.
	bm := ecsMountOf(b, path.Dir(x.config.Socket))
	am := ecsMountOf(app, path.Dir(x.config.Socket))
	switch {
	case bm == nil:
		t.Errorf("the broker mounts no volume at the socket's directory %s", path.Dir(x.config.Socket))
	case am == nil:
		t.Errorf("the app mounts no volume at the socket's directory %s", path.Dir(x.config.Socket))
	default:
		if deref(bm.SourceVolume) != deref(am.SourceVolume) || deref(bm.ContainerPath) != deref(am.ContainerPath) {
			t.Errorf("socket: the broker mounts %s at %s, the app %s at %s: want one volume at one path", deref(bm.SourceVolume), deref(bm.ContainerPath), deref(am.SourceVolume), deref(am.ContainerPath))
		}
		if deref(bm.ReadOnly) {
			t.Error("the broker mounts the socket's volume read-only")
		}
		if !deref(am.ReadOnly) {
			t.Error("the app mounts the socket's volume writable: mount it readOnly, so that it cannot replace the socket")
		}
		if deref(bm.ContainerPath) == path.Dir(x.config.Socket) {
			t.Errorf("the socket is straight in the volume's directory %s, whose mode the task does not control: use a subdirectory the broker makes", deref(bm.ContainerPath))
		}
		var declared bool
		for _, v := range td.Volumes {
			declared = declared || deref(v.Name) == deref(bm.SourceVolume)
		}
		if !declared {
			t.Errorf("volume %s is not among the task's volumes", deref(bm.SourceVolume))
		}
	}
	if v, _ := ecsEnv(app, "CREDBROKER_SOCKET"); v != x.config.Socket {
		t.Errorf("app: CREDBROKER_SOCKET=%q, want the configuration's socket %q", v, x.config.Socket)
	}

	// The broker writes only to volumes: its root filesystem is read-only.
	if !deref(b.ReadonlyRootFilesystem) || !deref(app.ReadonlyRootFilesystem) {
		t.Error("readonlyRootFilesystem: want true in both containers")
	}
	for what, p := range map[string]string{"socket": x.config.Socket, "audit.path": x.config.Audit.Path} {
		if m := ecsMountOf(b, path.Dir(p)); m == nil || deref(m.ReadOnly) {
			t.Errorf("%s %s: its directory is on no writable volume of the broker's", what, p)
		}
	}

	// The app's AWS SDKs, wired to the broker's container-credentials
	// endpoint: FULL_URI names an aws_credentials listener, which decides
	// on the process (ECS issues no token), and the entry point removes
	// the RELATIVE_URI ECS puts in every container, which the SDKs would
	// read first.
	full, _ := ecsEnv(app, "AWS_CONTAINER_CREDENTIALS_FULL_URI")
	l := x.awsListener(t, full)
	if l.Token != "optional" {
		t.Errorf("the aws_credentials listener on %s has token %q: ECS gives the app no token to present, so it must be optional", l.Listen, l.Token)
	}
	for _, v := range []string{"AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_ACCESS_KEY_ID"} {
		if _, ok := ecsEnv(app, v); ok {
			t.Errorf("app: %s is set; the app's SDK must find the broker's endpoint alone", v)
		}
	}
	if ep := app.EntryPoint; len(ep) < 3 || ep[0] != "/usr/bin/env" || !slices.Contains(ep, "-u") || !slices.Contains(ep, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
		t.Errorf("app entryPoint %q: want /usr/bin/env -u AWS_CONTAINER_CREDENTIALS_RELATIVE_URI --, since ECS sets it in every container and the SDKs prefer it to FULL_URI", ep)
	}
	if len(app.Command) == 0 {
		t.Error("app: an entryPoint without a command runs nothing: the image's CMD does not follow a task definition's entryPoint")
	}
	if sts := x.stsRole(l.Credential); sts == "" {
		t.Errorf("the aws_credentials listener serves %q, which is no aws_sts credential", l.Credential)
	} else if sts == deref(td.TaskRoleArn) {
		t.Errorf("the app's credential assumes the task role %s itself: give the app a role of its own, which the broker assumes with the task role", sts)
	}
	if deref(td.TaskRoleArn) == "" {
		t.Error("no taskRoleArn: the broker assumes the app's role with the task role's credentials")
	}

	// Users and privileges.
	// Users and privileges.
	buid, bgid := ecsUser(t, b)
	auid, agid := ecsUser(t, app)
	if buid != 0 {
		t.Errorf("broker user %d: want 0; a non-root container has no effective capability", buid)
	}
	if auid == 0 || auid == buid {
		t.Errorf("app user %d: want a non-root uid other than the broker's", auid)
	}
	if !slices.Contains(x.policies.unixUIDs(), auid) {
		t.Errorf("the app runs as uid %d, which no unix selector of the policies names (%v)", auid, x.policies.unixUIDs())
	}
	gid, err := strconv.ParseInt(x.config.SocketGroup, 10, 64)
	if err != nil {
		t.Fatalf("socket_group %q: want a numeric gid", x.config.SocketGroup)
	}
	if bgid != gid || agid != gid {
		t.Errorf("socket_group %d: the broker (%d, which must be in it to give it without CAP_CHOWN) and the app (%d, to connect) must have it as their group", gid, bgid, agid)
	}
	if got, want := effectiveCaps(b), []string{"DAC_OVERRIDE", "SYS_PTRACE"}; !slices.Equal(got, want) {
		t.Errorf("the broker's capabilities %v: want exactly %v (Fargate adds SYS_PTRACE only, so DAC_OVERRIDE is kept from the default set)", got, want)
	}
	if lp := b.LinuxParameters; lp == nil || lp.Capabilities == nil || !slices.Equal(lp.Capabilities.Add, []string{"SYS_PTRACE"}) {
		t.Error("the broker adds capabilities other than SYS_PTRACE, which Fargate refuses")
	}
	if got := effectiveCaps(app); len(got) != 0 {
		t.Errorf("the app holds capabilities %v: drop ALL", got)
	}
	if deref(b.Privileged) || deref(app.Privileged) {
		t.Error("privileged: want false")
	}

	// Secrets: every value the broker serves reaches its container, and
	// nothing of the broker's reaches the app's.
	env := map[string]string{}
	for _, kv := range b.Environment {
		env[deref(kv.Name)] = deref(kv.Value)
	}
	secretNames := map[string]bool{}
	for _, s := range b.Secrets {
		secretNames[deref(s.Name)] = true
		env[deref(s.Name)] = "placeholder-" + strings.ToLower(deref(s.Name))
	}
	for _, c := range x.config.Credentials {
		if c.Static == nil || c.Static.Env == "" {
			continue
		}
		if _, ok := env[c.Static.Env]; !ok {
			t.Errorf("credential %s reads $%s, which the broker's container has in neither environment nor secrets", c.Name, c.Static.Env)
		}
	}
	for _, kv := range app.Environment {
		if secretNames[deref(kv.Name)] {
			t.Errorf("the app's environment has %s, a secret of the broker's", deref(kv.Name))
		}
	}
	if len(app.Secrets) > 0 {
		t.Errorf("the app has secrets %v: it gets its credentials from the broker", app.Secrets)
	}
	if deref(b.Image) == "" || deref(b.Image) == deref(app.Image) {
		t.Error("the broker's image must be its own (credbroker's, with the configuration)")
	}

	// The configuration as the image holds it passes credbroker check, with
	// the container's environment and stand-ins for its secrets.
	cmd := exec.Command(credbrokerBinary(t), "check", "--config", filepath.Join(repoRoot, x.configFile),
		"--broker-uid", strconv.FormatInt(buid, 10), "--broker-gid", strconv.FormatInt(bgid, 10))
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("credbroker check %s: %v\n%s", x.configFile, err, out)
	}
}

// stsRole returns the role_arn of the aws_sts credential named name; ""
// when there is none.
func (x *ecsExample) stsRole(name string) string {
	for _, c := range x.config.Credentials {
		if c.Name == name && c.AWSSTS != nil {
			return c.AWSSTS.RoleARN
		}
	}
	return ""
}

// awsListener returns the aws_credentials listener the app's FULL_URI
// names: http://HOST:PORT/PATH with HOST:PORT the listener's listen.
func (x *ecsExample) awsListener(t *testing.T, fullURI string) (l struct{ Listen, Credential, Token string }) {
	t.Helper()
	u, err := url.Parse(fullURI)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		t.Fatalf("app: AWS_CONTAINER_CREDENTIALS_FULL_URI=%q, want http://LISTEN/PATH naming the broker's aws_credentials listener", fullURI)
	}
	var have []string
	for _, m := range x.config.Listeners {
		if a, ok := m["aws_credentials"]; ok {
			have = append(have, a.Listen)
			if a.Listen == u.Host {
				return struct{ Listen, Credential, Token string }{a.Listen, a.Credential, a.Token}
			}
		}
	}
	t.Fatalf("app: AWS_CONTAINER_CREDENTIALS_FULL_URI=%q names no aws_credentials listener of the configuration (they listen on %v)", fullURI, have)
	return l
}

// TestECSHealthCheck runs the broker's healthCheck command, as the task
// definition writes it, against a broker serving the example's
// configuration (its socket and audit log moved to a temporary directory):
// it fails while no broker answers, passes once the broker serves, leaves
// an allow row in the audit log, and fails again once the broker stopped.
func TestECSHealthCheck(t *testing.T) {
	x := readECSExample(t)
	bin := credbrokerBinary(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "sock", "broker.sock")
	db := filepath.Join(dir, "audit.db")

	hc := slices.Clone(x.broker.HealthCheck.Command[1:])
	if hc[0] != "/usr/local/bin/credbroker" {
		t.Fatalf("healthCheck %q does not run the image's binary", hc)
	}
	hc[0] = bin
	i := slices.Index(hc, "--socket")
	if i < 0 {
		t.Fatalf("healthCheck %q names no --socket", hc)
	}
	hc[i+1] = sock
	env := os.Environ()
	for _, kv := range x.broker.Environment {
		env = append(env, deref(kv.Name)+"="+deref(kv.Value))
	}
	for _, s := range x.broker.Secrets {
		env = append(env, deref(s.Name)+"=placeholder")
	}
	health := func() (int, string) {
		cmd := exec.Command(hc[0], hc[1:]...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, string(out)
		case errors.As(err, &ee):
			return ee.ExitCode(), string(out)
		}
		t.Fatalf("healthCheck: %v", err)
		return 0, ""
	}

	if code, out := health(); code == 0 {
		t.Fatalf("healthCheck passed with no broker running: %s", out)
	}

	run := exec.Command(bin, "run", "--config", filepath.Join(repoRoot, x.configFile),
		"--socket", sock, "--audit-db", db, "--admin", "off")
	run.Env = env
	broker := startBroker(t, run)

	code, out := health()
	if code != 0 {
		t.Fatalf("healthCheck %q against a serving broker: exit %d\n%s", hc, code, out)
	}
	q := exec.Command(bin, "audit", "query", "--db", db, "--credential", hc[2], "--format", "json")
	rows, err := q.Output()
	if err != nil {
		t.Fatalf("audit query: %v", err)
	}
	if !strings.Contains(string(rows), `"decision":"allow"`) {
		t.Errorf("the health check left no allow row for %s in the audit log:\n%s", hc[2], rows)
	}

	if err := broker.stop(t); err != nil {
		t.Errorf("the broker's exit after SIGTERM: %v", err)
	}
	if code, out := health(); code == 0 {
		t.Errorf("healthCheck passed after the broker stopped: %s", out)
	}
}
