package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	awsattest "github.com/credbroker/credbroker/attest/aws"
	"github.com/credbroker/credbroker/broker"
)

// TestAWSReplayAfterRestart: a signed sts:GetCallerIdentity request the
// broker accepted is refused as a replay by the broker restarted on the same
// state — 401, audited against the peer, STS never asked again — and the
// replay database beside the audit log holds neither the signature nor
// anything else of the request.
func TestAWSReplayAfterRestart(t *testing.T) {
	e, sts, keyID, secret, session := newAWSEnv(t)

	signed, err := awsattest.Sign(context.Background(), credentials.NewStaticCredentialsProvider(keyID, secret, session),
		"credbroker.test", "us-east-1", sts.Server.URL, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"aws_iam": signed})
	present := func(b *brokerProc) apiReply {
		return call(t, socketClient(e.socket), "POST", "/v1/credentials/demo",
			http.Header{"Credbroker-Request": {"1"}, "Content-Type": {"application/json"}}, bytes.NewReader(body))
	}

	b := e.start()
	if r := present(b); r.Status != 200 {
		t.Fatalf("first use: %d %s\n%s", r.Status, r.Body, b.logs)
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d\n%s", code, b.logs)
	}
	logs := b.logs.String()

	b = e.start()
	r := present(b)
	if r.Status != 401 || !strings.Contains(r.Err.Error.Message, "replay") {
		t.Fatalf("after a restart: %d %s, want 401 replay\n%s", r.Status, r.Body, b.logs)
	}
	if n := sts.Calls.Load(); n != 1 {
		t.Errorf("STS was asked %d times, want once", n)
	}
	b.stop(syscall.SIGTERM)
	logs += b.logs.String()

	rows := auditRows(t, e.db)
	expectRefusedAgainstPeer(t, rows, map[string]string{"replay": r.Err.Error.DecisionID})
	if !strings.Contains(rows[r.Err.Error.DecisionID].Reason, "replay") {
		t.Errorf("audit reason %q, want a replay", rows[r.Err.Error.DecisionID].Reason)
	}

	replayDB := e.db + replayDBSuffix
	if _, err := os.Stat(replayDB); err != nil {
		t.Fatalf("no replay database beside the audit log: %v", err)
	}
	az := http.Header(signed.Headers).Get("Authorization")
	sig := az[strings.LastIndex(az, "=")+1:]
	rawSig, _ := hex.DecodeString(sig)
	files := readAll(t, e.dir)
	for _, f := range []string{replayDB, replayDB + "-wal"} {
		raw, _ := os.ReadFile(f)
		files[filepath.Base(f)] = string(raw)
	}
	files["log"] = logs
	for where, text := range files {
		for what, s := range map[string]string{"signature": sig, "binary signature": string(rawSig), "secret key": secret, "session token": session,
			"nonce": signed.Headers[awsattest.NonceHeader][0]} {
			if strings.Contains(text, s) {
				t.Errorf("%s holds the request's %s", where, what)
			}
		}
	}
}

// TestTokenCacheTTLConfig: attestors.token_cache_ttl defaults to 30s, and
// to 5s with kubernetes token_review, which refuses more; 0s turns the
// cache off; nothing above 5m.
func TestTokenCacheTTLConfig(t *testing.T) {
	const review = "  kubernetes: {audiences: [credbroker], token_review: true, api_server: \"https://10.0.0.1:6443\", bearer_token_file: token}\n"
	const plain = "  kubernetes: {audiences: [credbroker], jwks_file: jwks.json}\n"
	for _, tt := range []struct {
		name      string
		attestors string
		want      time.Duration // the broker's TokenCacheTTL
		problem   string        // what check says, "" for none
	}{
		{"default", plain, broker.DefaultTokenCacheTTL, ""},
		{"default with token_review", review, broker.ReviewedTokenCacheTTL, ""},
		{"set", plain + "  token_cache_ttl: 2m\n", 2 * time.Minute, ""},
		{"off", review + "  token_cache_ttl: 0s\n", -1, ""},
		{"the cap with token_review", review + "  token_cache_ttl: 5s\n", 5 * time.Second, ""},
		{"above the cap with token_review", review + "  token_cache_ttl: 6s\n", 0, "credbroker.yaml:8: token_cache_ttl 6s: at most 5s with kubernetes token_review"},
		{"above the maximum", plain + "  token_cache_ttl: 1h\n", 0, "credbroker.yaml:8: token_cache_ttl 1h0m0s: at most 5m0s"},
		{"negative", plain + "  token_cache_ttl: -1s\n", 0, "invalid duration \"-1s\""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{
				"credbroker.yaml": "socket: /tmp/x.sock\naudit: {path: a.db}\npolicies: policies.yaml\ncredentials:\n  - {name: demo, static: {file: secrets/demo}}\nattestors:\n" + tt.attestors,
				"policies.yaml":   "policies:\n  - {name: p, effect: allow, workloads: [{unix: {uid: 0}}], credentials: [demo]}\n",
				"secrets/demo":    "v",
				"jwks.json":       `{"keys":[]}`,
			})
			out, errOut, code := runCLI("check", "--config", filepath.Join(dir, "credbroker.yaml"))
			if tt.problem != "" {
				if code != 1 || !strings.Contains(out+errOut, tt.problem) {
					t.Fatalf("check: exit %d\n%s%s\nwant %q", code, out, errOut, tt.problem)
				}
				return
			}
			if code != 0 {
				t.Fatalf("check: exit %d\n%s%s", code, out, errOut)
			}
			cfg := loadConfig(t, filepath.Join(dir, "credbroker.yaml"), nil)
			if got := cfg.Attestors.tokenCacheTTL(); got != tt.want {
				t.Errorf("TokenCacheTTL = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestReplayDBPath: attestors.aws.replay_db defaults to the audit
// database's path + ".aws-replay", follows --audit-db, and a relative one
// is relative to its file.
func TestReplayDBPath(t *testing.T) {
	base := "socket: /tmp/x.sock\naudit: {path: state/a.db}\npolicies: policies.yaml\ncredentials:\n  - {name: demo, static: {file: secrets/demo}}\nattestors:\n"
	for _, tt := range []struct {
		name, aws, auditDB, want string
	}{
		{"default", "  aws: {server_id: b}\n", "", "state/a.db.aws-replay"},
		{"follows --audit-db", "  aws: {server_id: b}\n", "/var/lib/x/audit.db", "/var/lib/x/audit.db.aws-replay"},
		{"set", "  aws: {server_id: b, replay_db: other/replay.db}\n", "", "other/replay.db"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{
				"credbroker.yaml": base + tt.aws,
				"policies.yaml":   "policies:\n  - {name: p, effect: allow, workloads: [{unix: {uid: 0}}], credentials: [demo]}\n",
				"secrets/demo":    "v",
			})
			cfg := loadConfig(t, filepath.Join(dir, "credbroker.yaml"), func(cfg *Config) {
				if tt.auditDB != "" {
					cfg.Audit.Path = tt.auditDB // as --audit-db does
				}
			})
			want := tt.want
			if !filepath.IsAbs(want) {
				want = filepath.Join(dir, want)
			}
			if got := cfg.Attestors.AWS.ReplayDB; got != want {
				t.Errorf("replay_db = %s, want %s", got, want)
			}
		})
	}
}

// loadConfig loads, overrides, completes and validates a configuration as
// `credbroker run` does before it builds the broker.
func loadConfig(t *testing.T, path string, override func(*Config)) *Config {
	t.Helper()
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if override != nil {
		override(cfg)
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}
