package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	yaml "go.yaml.in/yaml/v3"

	"github.com/credbroker/credbroker/internal/ststest"
)

// ecsAccount is the account the ECS example's ARNs name.
const ecsAccount = "123456789012"

// TestECSAppAWSCredentials runs the ECS example's AWS wiring end to end:
// the broker with the example's configuration and policies (its STS
// endpoint pointed at a stand-in for AWS STS, its aws_credentials listener
// on a free port), confined to the capabilities the task definition gives
// it, holding the task role's temporary credentials as the ECS agent hands
// them to its container; and the app's container as the task definition
// writes it — its entryPoint, its environment, plus the variables ECS
// itself injects (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI among them) — with
// an unmodified aws-sdk-go-v2 program as its command, as uid 1000.
//
// The SDK's default chain must find the broker's endpoint, not the task
// role: the program's credentials are orders-app's, assumed by the broker
// with the task role (the only principal orders-app trusts), and STS names
// them so. The decision is recorded on the app's process. The same
// program as another uid of the task is denied.
//
// The stand-in for STS is internal/ststest: STS's query protocol over
// HTTPS, verifying SigV4 signatures itself.
func TestECSAppAWSCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatalf("this test runs the broker as root with the task's capabilities and the app as uid %d, which needs root; running as uid %d", callerUID, os.Geteuid())
	}
	for _, tool := range []string{"setpriv", "/usr/bin/env"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (scripts/test.sh installs it)", tool, err)
		}
	}
	x := readECSExample(t)
	app := x.app
	full, _ := ecsEnv(app, "AWS_CONTAINER_CREDENTIALS_FULL_URI")
	l := x.awsListener(t, full)
	roleARN := x.stsRole(l.Credential)
	if roleARN == "" {
		t.Fatalf("the aws_credentials listener serves %q, no aws_sts credential", l.Credential)
	}
	taskRole := deref(x.td.TaskRoleArn)

	// AWS: the task role, which an ECS agent's user may assume, and the
	// app's role, which trusts the task role's session alone.
	stsSrv := ststest.New(t, ststest.Config{Account: ecsAccount})
	_, agentKey, agentSecret := stsSrv.AddUser("ecs-agent")
	stsSrv.AddRole(ststest.Role{Name: roleName(t, taskRole)})
	const taskSession = "ecs-task-5d41402abc4b"
	taskCreds := assumeRole(t, stsSrv, agentKey, agentSecret, "", taskRole, taskSession)
	taskPrincipal := "arn:aws:sts::" + ecsAccount + ":assumed-role/" + roleName(t, taskRole) + "/" + taskSession
	stsSrv.AddRole(ststest.Role{Name: roleName(t, roleARN), Principals: []string{taskPrincipal}})

	// Files the app's uid must reach.
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	caFile := filepath.Join(dir, "sts-ca.pem")
	home := filepath.Join(dir, "home")
	if os.WriteFile(caFile, stsSrv.CertPEM(), 0o644) != nil || os.Mkdir(home, 0o755) != nil {
		t.Fatal("cannot write the test's files")
	}
	bin := filepath.Join(dir, "credbroker")
	if err := os.Rename(credbrokerBinary(t), bin); err != nil {
		t.Fatal(err)
	}
	probe := filepath.Join(dir, "orders")
	build := exec.Command("go", "build", "-trimpath", "-o", probe, "./deploy/internal/awsprobe")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build awsprobe: %v\n%s", err, out)
	}

	// The broker's configuration as the image holds it, with STS's endpoint
	// the stand-in's and the listener on a free port.
	confDir := filepath.Join(dir, "etc")
	if err := os.Mkdir(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var conf map[string]any
	if err := yaml.Unmarshal([]byte(readRepoFile(t, x.configFile)), &conf); err != nil {
		t.Fatal(err)
	}
	for _, c := range conf["credentials"].([]any) {
		if m := c.(map[string]any); m["name"] == l.Credential {
			m["aws_sts"].(map[string]any)["endpoint"] = stsSrv.URL
		}
	}
	for _, e := range conf["listeners"].([]any) {
		if a, ok := e.(map[string]any)["aws_credentials"].(map[string]any); ok && a["listen"] == l.Listen {
			a["listen"] = "127.0.0.1:0"
		}
	}
	confYAML, err := yaml.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	policiesFile := filepath.Join(filepath.Dir(x.configFile), x.config.Policies)
	if os.WriteFile(filepath.Join(confDir, "credbroker.yaml"), confYAML, 0o644) != nil ||
		os.WriteFile(filepath.Join(confDir, x.config.Policies), []byte(readRepoFile(t, policiesFile)), 0o644) != nil {
		t.Fatal("cannot write the configuration")
	}
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "state", "audit.db")

	// The broker: root with the task's capabilities, in group 1000, with
	// its container's environment, and the task role's credentials where
	// its SDK finds them.
	buid, bgid := ecsUser(t, x.broker)
	if buid != 0 {
		t.Fatalf("the broker's user is %d; this test runs it as root, as the task does", buid)
	}
	bounding := "-all"
	for _, c := range effectiveCaps(x.broker) {
		bounding += ",+" + strings.ToLower(c)
	}
	run := exec.Command("setpriv", "--groups", strconv.FormatInt(bgid, 10), "--inh-caps=-all", "--bounding-set="+bounding, "--no-new-privs",
		bin, "run", "--config", filepath.Join(confDir, "credbroker.yaml"),
		"--socket", filepath.Join(dir, "sock", "broker.sock"), "--audit-db", db, "--admin", "off")
	run.Env = []string{
		"PATH=/usr/bin:/bin", "HOME=" + home, "AWS_EC2_METADATA_DISABLED=true", "AWS_CA_BUNDLE=" + caFile,
		"AWS_ACCESS_KEY_ID=" + taskCreds.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + taskCreds.SecretAccessKey, "AWS_SESSION_TOKEN=" + taskCreds.SessionToken,
	}
	for _, kv := range x.broker.Environment {
		run.Env = append(run.Env, deref(kv.Name)+"="+deref(kv.Value))
	}
	for _, s := range x.broker.Secrets {
		run.Env = append(run.Env, deref(s.Name)+"=placeholder")
	}
	broker := startBroker(t, run)
	m := regexp.MustCompile(`"msg":"aws_credentials listening","addr":"([^"]+)"`).FindStringSubmatch(broker.logged())
	if m == nil {
		t.Fatalf("the broker logged no aws_credentials listener:\n%s", broker.logged())
	}
	u, _ := url.Parse(full)
	u.Host = m[1]

	// The app's container: its entryPoint, the probe as its command, its
	// environment, and what ECS adds to every container of a task with a
	// task role.
	if len(app.EntryPoint) == 0 || len(app.Command) == 0 {
		t.Fatalf("the app's entryPoint %q and command %q: want both", app.EntryPoint, app.Command)
	}
	appEnv := []string{
		"PATH=/usr/bin:/bin", "HOME=" + home,
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/credentials/0f6b9c1e-7d0a-4c55-9b61-3f2f1f0f8a17",
		"AWS_REGION=us-east-1", "AWS_DEFAULT_REGION=us-east-1",
		// Where this test's STS is, which the real SDK would find at
		// sts.amazonaws.com, and how to trust it.
		"AWS_ENDPOINT_URL_STS=" + stsSrv.URL, "AWS_CA_BUNDLE=" + caFile, "AWS_EC2_METADATA_DISABLED=true",
	}
	for _, kv := range app.Environment {
		v := deref(kv.Value)
		if deref(kv.Name) == "AWS_CONTAINER_CREDENTIALS_FULL_URI" {
			v = u.String()
		}
		appEnv = append(appEnv, deref(kv.Name)+"="+v)
	}
	auid, agid := ecsUser(t, app)
	runApp := func(uid int64) (probeResult, string, error) {
		args := []string{"--reuid", strconv.FormatInt(uid, 10), "--regid", strconv.FormatInt(agid, 10), "--groups", strconv.FormatInt(agid, 10),
			"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"}
		args = append(append(append(args, app.EntryPoint...), probe), app.Command[1:]...)
		cmd := exec.Command("setpriv", args...)
		cmd.Env = appEnv
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var r probeResult
		if err == nil {
			err = json.Unmarshal(out, &r)
		}
		return r, stderr.String(), err
	}

	got, stderr, err := runApp(auid)
	if err != nil {
		t.Fatalf("the app's AWS SDK as uid %d: %v\n%s\nbroker:\n%s", auid, err, stderr, broker.logged())
	}
	if got.Source != "CredentialsEndpointProvider" {
		t.Errorf("the SDK took its credentials from %q, want the container-credentials endpoint", got.Source)
	}
	if want := "arn:aws:sts::" + ecsAccount + ":assumed-role/" + roleName(t, roleARN) + "/"; !strings.HasPrefix(got.ARN, want) {
		t.Errorf("STS says the app is %s, want a session of %s (assumed by the broker), not the task role", got.ARN, roleARN)
	}
	if got.AccessKeyID == taskCreds.AccessKeyID {
		t.Error("the app holds the task role's access key")
	}
	var assumed []ststest.Call
	for _, c := range stsSrv.Calls() {
		if c.RoleARN == roleARN {
			assumed = append(assumed, c)
		}
	}
	if len(assumed) != 1 || assumed[0].Caller != taskPrincipal || assumed[0].AccessKeyID != got.AccessKeyID {
		t.Errorf("AssumeRole calls for %s: %+v, want one by the task role's session %s issuing the app's key", roleARN, assumed, taskPrincipal)
	}

	// Another uid of the task gets nothing.
	if _, stderr, err := runApp(auid + 1); err == nil {
		t.Errorf("the app's SDK as uid %d got credentials", auid+1)
	} else if !strings.Contains(stderr, "denied") {
		t.Errorf("the SDK as uid %d failed otherwise than by a denial: %v\n%s", auid+1, err, stderr)
	}

	// One allow on the app's process, one deny on the other's.
	q := exec.Command(bin, "audit", "query", "--db", db, "--credential", l.Credential, "--kind", "decision", "--format", "json")
	out, err := q.Output()
	if err != nil {
		t.Fatalf("audit query: %v", err)
	}
	var summary []string
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var r struct {
			Decision, Policy, Channel, Attestor string
			PeerUID                             int64 `json:"peer_uid"`
		}
		if err := dec.Decode(&r); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("audit query's output: %v\n%s", err, out)
		}
		summary = append(summary, r.Decision+" "+r.Policy+" "+r.Channel+" "+r.Attestor+" uid "+strconv.FormatInt(r.PeerUID, 10))
	}
	want := []string{
		"allow orders-app-gets-aws aws unix uid " + strconv.FormatInt(auid, 10),
		"deny  aws unix uid " + strconv.FormatInt(auid+1, 10),
	}
	if !slices.Equal(summary, want) {
		t.Errorf("decisions on %s:\n%q\nwant\n%q", l.Credential, summary, want)
	}
	if strings.Contains(broker.logged(), taskCreds.SecretAccessKey) || strings.Contains(string(out), taskCreds.SecretAccessKey) {
		t.Error("the task role's secret key is in the broker's log or the audit log")
	}
}

// probeResult is what deploy/internal/awsprobe prints.
type probeResult struct {
	Source      string `json:"source"`
	AccessKeyID string `json:"access_key_id"`
	ARN         string `json:"arn"`
}

// roleName is the name of an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME).
func roleName(t *testing.T, arn string) string {
	t.Helper()
	_, name, ok := strings.Cut(arn, ":role/")
	if !ok || !strings.HasPrefix(arn, "arn:aws:iam::"+ecsAccount+":") {
		t.Fatalf("%q is not a role ARN of account %s", arn, ecsAccount)
	}
	return name
}

// assumeRole assumes roleARN at the STS stand-in with the given key, as
// the ECS agent does for a task role.
func assumeRole(t *testing.T, s *ststest.STS, key, secret, token, roleARN, session string) awssdk.Credentials {
	t.Helper()
	c := sts.New(sts.Options{
		Region:       s.Region,
		BaseEndpoint: awssdk.String(s.URL),
		HTTPClient:   s.Client(),
		Credentials:  credentials.NewStaticCredentialsProvider(key, secret, token),
	})
	out, err := c.AssumeRole(context.Background(), &sts.AssumeRoleInput{RoleArn: &roleARN, RoleSessionName: &session})
	if err != nil {
		t.Fatalf("AssumeRole %s: %v", roleARN, err)
	}
	if out.Credentials == nil {
		t.Fatal("AssumeRole returned no credentials")
	}
	return awssdk.Credentials{
		AccessKeyID:     deref(out.Credentials.AccessKeyId),
		SecretAccessKey: deref(out.Credentials.SecretAccessKey),
		SessionToken:    deref(out.Credentials.SessionToken),
	}
}
