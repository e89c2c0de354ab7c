package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	awsattest "github.com/credbroker/credbroker/attest/aws"
	"github.com/credbroker/credbroker/client"
	"github.com/credbroker/credbroker/providers/aws"
)

// Exit codes of the commands that ask a running broker (get, exec) or
// dry-run its decision (explain), so that scripts can tell a refusal they
// should report from an outage they should retry. 0 is success, exitUsage
// (2) a command-line mistake — or a name the broker refused as malformed —
// and 1 any other failure. exec, once the command has started, exits with
// the command's own status instead (see execHelp).
const (
	// exitDenied: the policy does not allow the caller the credential
	// (explain: the decision is deny).
	exitDenied = 3
	// exitUnauthenticated: the broker could not establish the caller's
	// identity (a bad or expired token, evidence no attestor accepts).
	exitUnauthenticated = 4
	// exitNotFound: the broker has no credential of that name.
	exitNotFound = 5
	// exitUnavailable: the broker could not serve it now (its provider or
	// audit log failed, or it did not answer in time); try again later.
	exitUnavailable = 6
	// exitUnreachable: nothing answers on the socket; the message names the
	// path and how to name another (--socket, $CREDBROKER_SOCKET).
	exitUnreachable = 7
)

// exitCodesHelp documents the exit codes, for help texts.
const exitCodesHelp = `Exit codes (get, exec before the command starts, explain):
  0  success (explain: allow)
  1  any other failure (an unreadable token file, a malformed reply …)
  2  usage: a command-line mistake, or a credential name the broker refused as malformed
  3  denied by policy (explain: the decision is deny)
  4  unauthenticated: the broker could not establish who is calling
  5  not found: the broker has no credential of that name
  6  unavailable: the broker could not serve it now (provider or audit failure, timeout); retry
  7  cannot reach the broker: nothing answers on the socket (--socket, $CREDBROKER_SOCKET)
exec, once the command has started: the command's status, or 128+N when signal N ended it;
126 when the command cannot be run, 127 when it is not found.`

// exitCodeOf is the exit code for an error of the client.
func exitCodeOf(err error) int {
	switch {
	case errors.Is(err, client.ErrDenied):
		return exitDenied
	case errors.Is(err, client.ErrUnauthenticated):
		return exitUnauthenticated
	case errors.Is(err, client.ErrNotFound):
		return exitNotFound
	case errors.Is(err, client.ErrBadRequest):
		return exitUsage
	case errors.Is(err, client.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return exitUnavailable
	case errors.Is(err, client.ErrUnreachable):
		return exitUnreachable
	}
	return 1
}

// failClient prints an error of the client (its messages already start
// with "credbroker: ") and returns its exit code.
func (c *cli) failClient(err error) int {
	msg := err.Error()
	if !strings.HasPrefix(msg, "credbroker: ") {
		msg = "credbroker: " + msg
	}
	fmt.Fprintln(c.stderr, msg)
	return exitCodeOf(err)
}

// The output formats of get.
const (
	formatJSON       = "json"
	formatEnv        = "env"
	formatAWSProcess = "aws-process"
)

func (c *cli) get(args []string) int {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	socket := fs.String("socket", envOr(client.SocketEnv, client.DefaultSocket), "socket API path (default $CREDBROKER_SOCKET or "+client.DefaultSocket+")")
	tokenFile := fs.String("token-file", "", "file holding a bearer token to present as evidence")
	format := fs.String("format", formatJSON, "output format: json, env (shell export lines) or aws-process (the AWS credential_process JSON)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	useAWS := fs.Bool("aws", false, "prove an AWS IAM identity: sign sts:GetCallerIdentity with the default AWS credential chain")
	serverID := fs.String("aws-server-id", os.Getenv("CREDBROKER_AWS_SERVER_ID"), "the broker's attestors.aws.server_id (default $CREDBROKER_AWS_SERVER_ID)")
	region := fs.String("aws-region", "", "signing region (default: the AWS configuration's, else us-east-1)")
	endpoint := fs.String("aws-sts-endpoint", "https://sts.amazonaws.com", "STS endpoint the broker sends the request to")
	pos, err := c.parse(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) != 1 {
		fmt.Fprintln(c.stderr, "credbroker get: give exactly one credential name")
		return exitUsage
	}
	if *format != formatJSON && *format != formatEnv && *format != formatAWSProcess {
		fmt.Fprintf(c.stderr, "credbroker get: --format %q: use json, env or aws-process\n", *format)
		return exitUsage
	}
	if *useAWS && *serverID == "" {
		fmt.Fprintln(c.stderr, "credbroker get: --aws needs --aws-server-id (the broker's attestors.aws.server_id)")
		return exitUsage
	}
	var opts []client.Option
	if *tokenFile != "" {
		opts = append(opts, client.WithTokenFile(*tokenFile))
	}
	if *useAWS {
		opts = append(opts, client.WithAWSIAM(func(ctx context.Context) (json.RawMessage, error) {
			return signAWS(ctx, *serverID, *region, *endpoint)
		}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cred, err := client.New(*socket, opts...).Get(ctx, pos[0])
	if err != nil {
		return c.failClient(err)
	}
	out, err := render(cred, *format)
	if err != nil {
		return c.fail(err)
	}
	_, _ = c.stdout.Write(out)
	return 0
}

// render prints cred in format.
func render(cred *client.Credential, format string) ([]byte, error) {
	switch format {
	case formatEnv:
		return []byte(envLines(cred)), nil
	case formatAWSProcess:
		return awsProcess(cred)
	}
	return replyJSON(cred)
}

// replyJSON is the socket API's success body for cred, values included
// (client.Credential's own JSON redacts them).
func replyJSON(cred *client.Credential) ([]byte, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	err := enc.Encode(struct {
		Name       string            `json:"name"`
		Kind       string            `json:"kind"`
		Data       map[string]string `json:"data"`
		ExpiresAt  time.Time         `json:"expires_at"`
		LeaseID    string            `json:"lease_id"`
		DecisionID string            `json:"decision_id"`
	}{cred.Name, cred.Kind, cred.Data, cred.ExpiresAt.UTC(), cred.LeaseID, cred.DecisionID})
	return []byte(b.String()), err
}

// awsProcess is the document the AWS CLI and SDKs read from a
// credential_process command: version 1, the keys, and the expiry, after
// which they run the command again. An aws_sts credential has the three
// fields; a static one needs access_key_id and secret_access_key, and
// session_token for temporary keys.
func awsProcess(cred *client.Credential) ([]byte, error) {
	for _, f := range []string{aws.FieldAccessKeyID, aws.FieldSecretAccessKey} {
		if cred.Data[f] == "" {
			return nil, fmt.Errorf("--format aws-process: credential %q (kind %s, fields %s) has no %s field: it needs %s and %s, and %s for temporary keys, as %s credentials carry",
				cred.Name, cred.Kind, strings.Join(cred.Fields(), ", "), f, aws.FieldAccessKeyID, aws.FieldSecretAccessKey, aws.FieldSessionToken, aws.Kind)
		}
	}
	b, err := json.Marshal(struct {
		Version         int
		AccessKeyID     string `json:"AccessKeyId"`
		SecretAccessKey string
		SessionToken    string `json:",omitempty"`
		Expiration      string
	}{1, cred.Data[aws.FieldAccessKeyID], cred.Data[aws.FieldSecretAccessKey], cred.Data[aws.FieldSessionToken], cred.ExpiresAt.UTC().Format(time.RFC3339)})
	return append(b, '\n'), err
}

// signAWS signs an sts:GetCallerIdentity request bound to the broker's
// server id with the default AWS credential chain (environment, shared
// files, ECS task role, EC2 instance profile) and returns its JSON, the
// socket API body's "aws_iam".
func signAWS(ctx context.Context, serverID, region, endpoint string) (json.RawMessage, error) {
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("aws credentials: %w", err)
	}
	if region == "" {
		region = cfg.Region
	}
	if region == "" {
		region = "us-east-1"
	}
	signed, err := awsattest.Sign(ctx, cfg.Credentials, serverID, region, endpoint, time.Now())
	if err != nil {
		return nil, err
	}
	return json.Marshal(signed)
}

var envUnsafe = regexp.MustCompile(`[^A-Z0-9_]`)

// envName is the variable name for a credential's field:
// NAME_FIELD, uppercased, every other character than A-Z 0-9 _ as _
// (orders-db, password → ORDERS_DB_PASSWORD).
func envName(credential, field string) string {
	return envUnsafe.ReplaceAllString(strings.ToUpper(credential), "_") + "_" + envUnsafe.ReplaceAllString(strings.ToUpper(field), "_")
}

// envLines renders a credential as shell export lines: NAME_FIELD='value'
// for each data field, then NAME_EXPIRES_AT and NAME_LEASE_ID.
func envLines(cred *client.Credential) string {
	keys := make([]string, 0, len(cred.Data))
	for k := range cred.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	line := func(k, v string) {
		fmt.Fprintf(&b, "export %s=%s\n", envName(cred.Name, k), shellQuote(v))
	}
	for _, k := range keys {
		line(k, cred.Data[k])
	}
	line("expires_at", cred.ExpiresAt.UTC().Format(time.RFC3339))
	line("lease_id", cred.LeaseID)
	return b.String()
}

// shellQuote quotes s for POSIX shells.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
