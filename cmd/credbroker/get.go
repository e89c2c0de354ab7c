package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	awsattest "github.com/credbroker/credbroker/attest/aws"
)

// getReply is the socket API's success body.
type getReply struct {
	Name       string            `json:"name"`
	Kind       string            `json:"kind"`
	Data       map[string]string `json:"data"`
	ExpiresAt  time.Time         `json:"expires_at"`
	LeaseID    string            `json:"lease_id"`
	DecisionID string            `json:"decision_id"`
}

type getError struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		DecisionID string `json:"decision_id"`
	} `json:"error"`
}

func (c *cli) get(args []string) int {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	socket := fs.String("socket", envOr("CREDBROKER_SOCKET", defaultSocket), "socket API path (default $CREDBROKER_SOCKET or "+defaultSocket+")")
	tokenFile := fs.String("token-file", "", "file holding a bearer token to present as evidence")
	format := fs.String("format", "json", "output format: json or env")
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
	if *format != "json" && *format != "env" {
		fmt.Fprintf(c.stderr, "credbroker get: --format %q: use json or env\n", *format)
		return exitUsage
	}
	var token string
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return c.fail(fmt.Errorf("token file: %w", err))
		}
		token = strings.TrimSpace(string(b))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var evidence []byte
	if *useAWS {
		if evidence, err = signAWS(ctx, *serverID, *region, *endpoint); err != nil {
			return c.fail(err)
		}
	}
	body, err := fetchCredential(ctx, *socket, pos[0], token, evidence)
	if err != nil {
		return c.fail(err)
	}
	if *format == "json" {
		_, _ = c.stdout.Write(body)
		return 0
	}
	var r getReply
	if err := json.Unmarshal(body, &r); err != nil {
		return c.fail(fmt.Errorf("reading reply: %w", err))
	}
	_, _ = io.WriteString(c.stdout, envLines(r))
	return 0
}

// fetchCredential asks the broker at socket for name and returns the raw
// JSON reply, or an error carrying the broker's message.
func fetchCredential(ctx context.Context, socket, name, token string, body []byte) ([]byte, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	method, reqBody := http.MethodGet, io.Reader(nil)
	if body != nil {
		method, reqBody = http.MethodPost, bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://credbroker/v1/credentials/"+url.PathEscape(name), reqBody)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Credbroker-Request", "1")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("broker at %s: %w", socket, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e getError
		if json.Unmarshal(reply, &e) == nil && e.Error.Message != "" {
			return nil, fmt.Errorf("%s (%d %s, decision %s)", e.Error.Message, resp.StatusCode, e.Error.Code, e.Error.DecisionID)
		}
		return nil, fmt.Errorf("broker answered %s", resp.Status)
	}
	return reply, nil
}

// signAWS signs an sts:GetCallerIdentity request bound to the broker's
// server id with the default AWS credential chain (environment, shared
// files, ECS task role, EC2 instance profile) and returns the socket API
// body that carries it.
func signAWS(ctx context.Context, serverID, region, endpoint string) ([]byte, error) {
	if serverID == "" {
		return nil, errors.New("--aws needs --aws-server-id (the broker's attestors.aws.server_id)")
	}
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
	return json.Marshal(map[string]awsattest.Request{"aws_iam": signed})
}

var envUnsafe = regexp.MustCompile(`[^A-Z0-9_]`)

// envLines renders a reply as shell export lines: NAME_FIELD='value' for
// each data field, then NAME_EXPIRES_AT and NAME_LEASE_ID.
func envLines(r getReply) string {
	prefix := envUnsafe.ReplaceAllString(strings.ToUpper(r.Name), "_")
	keys := make([]string, 0, len(r.Data))
	for k := range r.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	line := func(k, v string) {
		fmt.Fprintf(&b, "export %s_%s=%s\n", prefix, envUnsafe.ReplaceAllString(strings.ToUpper(k), "_"), shellQuote(v))
	}
	for _, k := range keys {
		line(k, r.Data[k])
	}
	line("expires_at", r.ExpiresAt.UTC().Format(time.RFC3339))
	line("lease_id", r.LeaseID)
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
