package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"path"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/policies"
)

// check validates the configuration and policies and prints every problem
// as "file:line: message" and every warning as "file:line: warning:
// message". Exit 1 on any problem; warnings alone exit 0.
func (c *cli) check(args []string) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	configPath := fs.String("config", "", "configuration file or directory (required)")
	if _, err := c.parse(fs, args); err != nil {
		return exitUsage
	}
	if *configPath == "" {
		fmt.Fprintln(c.stderr, "credbroker check: --config is required")
		return exitUsage
	}
	lc, err := loadAll(*configPath, nil)
	if err == nil {
		_, _, err = buildProviders(lc.cfg)
	}
	if err != nil {
		for _, line := range problemLines(err) {
			fmt.Fprintln(c.stdout, line)
		}
		return 1
	}
	for _, w := range warnings(lc) {
		fmt.Fprintln(c.stdout, w)
	}
	fmt.Fprintf(c.stdout, "ok: %d credentials, %d policies (version %s)\n", len(lc.cfg.Credentials), lc.policies.Len(), lc.policies.Version())
	return 0
}

// problemLines flattens joined errors into one line per problem.
func problemLines(err error) []string {
	var lines []string
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var ps policies.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				lines = append(lines, p.Error())
			}
			return
		}
		lines = append(lines, strings.Split(err.Error(), "\n")...)
	}
	walk(err)
	return lines
}

// warnings lists what the policy compiler warns about, such as a github
// selector that pins no repository, then policies naming credentials that
// are not configured.
func warnings(lc *loadedConfig) []string {
	var out []string
	for _, w := range lc.policies.Warnings() {
		out = append(out, policies.Problem{File: w.File, Line: w.Line, Message: "warning: " + w.Message}.Error())
	}
	for _, p := range lc.policies.Policies() {
		for _, pat := range p.Credentials {
			found := false
			for _, cc := range lc.cfg.Credentials {
				if ok, _ := path.Match(pat, cc.Name); ok {
					found = true
					break
				}
			}
			if !found {
				out = append(out, fmt.Sprintf("%s:%d: warning: policy %q names credential %q, which is not configured", p.File, p.Line, p.Name, pat))
			}
		}
	}
	return out
}

// explain dry-runs one decision and prints which policy decided it and why
// every policy did or did not match.
func (c *cli) explain(args []string) int {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	configPath := fs.String("config", "", "configuration file or directory (required)")
	credential := fs.String("credential", "", "credential name (required)")
	subject := fs.String("subject", "", `workload subject, e.g. "unix:uid:1000" (required)`)
	attestor := fs.String("attestor", "", "identity method (default: inferred from the subject)")
	method := fs.String("method", "", "request method (GET, POST, …); an attestor name (unix, kubernetes, spiffe, github, aws) sets the identity method instead")
	reqPath := fs.String("path", "", "request path")
	host := fs.String("host", "", "request host")
	channel := fs.String("channel", "socket", "request channel")
	asJSON := fs.Bool("json", false, "print the explanation as JSON")
	var claims stringList
	fs.Var(&claims, "claim", "identity claim k=v (repeatable; k:=JSON for a typed value)")
	if _, err := c.parse(fs, args); err != nil {
		return exitUsage
	}
	if *configPath == "" || *credential == "" || *subject == "" {
		fmt.Fprintln(c.stderr, "credbroker explain: --config, --credential and --subject are required")
		return exitUsage
	}
	if isMethod(*method) {
		*attestor, *method = *method, ""
	}
	id, err := identityFromFlags(*attestor, *subject, claims)
	if err != nil {
		fmt.Fprintln(c.stderr, "credbroker explain:", err)
		return exitUsage
	}
	lc, err := loadAll(*configPath, nil)
	if err != nil {
		for _, line := range problemLines(err) {
			fmt.Fprintln(c.stderr, line)
		}
		return 1
	}
	in := policies.Input{
		Identity: id,
		Request:  policies.Request{Channel: *channel, Credential: *credential, Method: *method, Path: *reqPath, Host: *host},
		Now:      time.Now(),
	}
	ex := lc.policies.Explain(in)
	if *asJSON {
		b, _ := json.MarshalIndent(ex, "", "  ")
		fmt.Fprintln(c.stdout, string(b))
	} else {
		printExplanation(c, lc, in, ex)
	}
	if !ex.Allowed() {
		return 3
	}
	return 0
}

func printExplanation(c *cli, lc *loadedConfig, in policies.Input, ex policies.Explanation) {
	fmt.Fprintf(c.stdout, "decision:   %s\n", ex.Effect)
	if ex.Policy != "" {
		for _, s := range ex.Trace {
			if s.Policy == ex.Policy {
				fmt.Fprintf(c.stdout, "policy:     %s (%s:%d, version %s)\n", ex.Policy, s.File, s.Line, ex.Version)
			}
		}
	} else {
		fmt.Fprintf(c.stdout, "policy:     none matched: default deny (policy set %s)\n", ex.Version)
	}
	fmt.Fprintf(c.stdout, "reason:     %s\n", ex.Reason)
	if ex.TTL > 0 {
		fmt.Fprintf(c.stdout, "ttl cap:    %s\n", ex.TTL)
	}
	known := false
	for _, cc := range lc.cfg.Credentials {
		known = known || cc.Name == in.Request.Credential
	}
	if !known {
		fmt.Fprintf(c.stdout, "note:       credential %q is not configured; the broker would answer 404\n", in.Request.Credential)
	}
	fmt.Fprintln(c.stdout, "\ntrace:")
	tw := tabwriter.NewWriter(c.stdout, 2, 4, 2, ' ', 0)
	for _, s := range ex.Trace {
		mark := "-"
		if s.Matched {
			mark = "matched"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s:%d\t%s\t%s\n", s.Effect, s.Policy, s.File, s.Line, mark, s.Why)
	}
	tw.Flush()
}

func isMethod(s string) bool {
	for _, m := range attest.Methods {
		if s == m {
			return true
		}
	}
	return false
}

// identityFromFlags builds the identity explain evaluates. For a unix
// subject the uid claim is derived from it.
func identityFromFlags(method, subject string, claims []string) (attest.Identity, error) {
	if method == "" {
		method = inferMethod(subject)
	}
	if method == "" {
		return attest.Identity{}, fmt.Errorf("cannot tell the identity method of %q; pass --method unix|kubernetes|spiffe|github|aws", subject)
	}
	id := attest.Identity{Method: method, Subject: subject, Claims: map[string]any{}}
	if method == attest.MethodUnix {
		if uid, err := strconv.ParseInt(strings.TrimPrefix(subject, "unix:uid:"), 10, 64); err == nil {
			id.Claims["uid"] = uid
		}
	}
	for _, kv := range claims {
		if k, v, ok := strings.Cut(kv, ":="); ok {
			var val any
			if err := json.Unmarshal([]byte(v), &val); err != nil {
				return id, fmt.Errorf("--claim %s: value is not JSON: %v", k, err)
			}
			id.Claims[k] = normalizeJSON(val)
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return id, fmt.Errorf("--claim %q: use key=value", kv)
		}
		id.Claims[k] = v
		if method == attest.MethodUnix && (k == "uid" || k == "gid" || k == "pid") {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return id, fmt.Errorf("--claim %s=%s: not an integer", k, v)
			}
			id.Claims[k] = n
		}
	}
	return id, nil
}

// normalizeJSON turns whole JSON numbers into int64, as attestors do.
func normalizeJSON(v any) any {
	switch x := v.(type) {
	case float64:
		if x == float64(int64(x)) {
			return int64(x)
		}
	case []any:
		for i := range x {
			x[i] = normalizeJSON(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = normalizeJSON(x[k])
		}
	}
	return v
}

func inferMethod(subject string) string {
	switch {
	case strings.HasPrefix(subject, "unix:"):
		return attest.MethodUnix
	case strings.HasPrefix(subject, "system:serviceaccount:"):
		return attest.MethodKubernetes
	case strings.HasPrefix(subject, "spiffe://"):
		return attest.MethodSPIFFE
	case strings.HasPrefix(subject, "arn:aws"):
		return attest.MethodAWS
	case strings.HasPrefix(subject, "repo:"):
		return attest.MethodGitHub
	}
	return ""
}
