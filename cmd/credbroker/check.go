package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/policies"
)

// check validates the configuration and policies and prints every problem
// as "file:line: message" and every warning as "file:line: warning:
// message". Exit 1 on any problem; warnings alone exit 0. When all is
// well it ends with the policy set version and each policy with its own
// policy version, the hashes the audit log records.
func (c *cli) check(args []string) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	configPath := fs.String("config", "", "configuration file or directory (required)")
	self := brokerSelfFlags(fs)
	if _, err := c.parse(fs, args); err != nil {
		return exitUsage
	}
	if *configPath == "" {
		fmt.Fprintln(c.stderr, "credbroker check: --config is required")
		return exitUsage
	}
	lc, err := loadAll(*configPath, self, nil)
	if err == nil {
		var built *builtProviders
		if built, err = buildProviders(lc.cfg, nil, "", slog.New(slog.DiscardHandler)); err == nil {
			built.close()
		}
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
	fmt.Fprintf(c.stdout, "ok: %d credentials, %d policies (policy set version %s)\n", len(lc.cfg.Credentials), lc.policies.Len(), lc.policies.Version())
	if infos := lc.policies.Policies(); len(infos) > 0 {
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  EFFECT\tPOLICY\tFILE:LINE\tPOLICY_VERSION")
		for _, p := range infos {
			fmt.Fprintf(tw, "  %s\t%s\t%s:%d\t%s\n", p.Effect, p.Name, p.File, p.Line, p.Version)
		}
		tw.Flush()
	}
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
	if sp := lc.cfg.Attestors.SPIFFE; sp != nil && sp.MTLSListen != "" {
		out = append(out, fmt.Sprintf("%s: warning: attestors.spiffe.mtls_listen is deprecated: write listeners: [{socket_api: {listen: %s, cert_file: …, key_file: …}}]", lc.cfg.pos("attestors.spiffe.mtls_listen"), sp.MTLSListen))
	}
	return out
}

// explain dry-runs one decision and prints which policy decided it and why
// every policy did or did not match. It builds the policy input the broker
// would build for the same caller and request: on the socket API's
// channels the request method and path default to what the API passes
// (GET, /v1/credentials/NAME), a token caller's unix peer is described
// with --peer-claim, and `uid: self` is the uid of the broker — by default
// the user explain runs as, --broker-uid otherwise.
func (c *cli) explain(args []string) int {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	configPath := fs.String("config", "", "configuration file or directory (required)")
	credential := fs.String("credential", "", "credential name (required)")
	subject := fs.String("subject", "", `workload subject, e.g. "unix:uid:1000" (required)`)
	attestor := fs.String("attestor", "", "identity method: unix, kubernetes, spiffe, github or aws (default: inferred from the subject)")
	httpMethod := fs.String("http-method", "", `request.method (default on the socket and mtls channels: "GET", as the socket API passes it)`)
	reqPath := fs.String("path", "", `request.path (default on the socket and mtls channels: "/v1/credentials/NAME")`)
	host := fs.String("host", "", "request.host")
	channel := fs.String("channel", broker.ChannelSocket, "request.channel")
	at := fs.String("at", "", "evaluate at this time, RFC 3339 (default: now)")
	var removed *string
	fs.Func("method", "removed: use --attestor for the identity method, --http-method for request.method", func(v string) error {
		removed = &v
		return nil
	})
	self := brokerSelfFlags(fs)
	asJSON := fs.Bool("json", false, "print the explanation as JSON")
	var claims, peerClaims stringList
	fs.Var(&claims, "claim", "identity claim k=v (repeatable; k:=JSON for a typed value)")
	fs.Var(&peerClaims, "peer-claim", "claim k=v of the unix peer behind a token caller, as the kernel attests it (repeatable; needs uid)")
	if _, err := c.parse(fs, args); err != nil {
		return exitUsage
	}
	if removed != nil {
		use := "--http-method " + *removed + " for request.method"
		if isMethod(*removed) {
			use = "--attestor " + *removed + " for the identity method"
		}
		fmt.Fprintf(c.stderr, "credbroker explain: --method is gone, it meant both the identity method and request.method: use %s\n", use)
		return exitUsage
	}
	if *configPath == "" || *credential == "" || *subject == "" {
		fmt.Fprintln(c.stderr, "credbroker explain: --config, --credential and --subject are required")
		return exitUsage
	}
	now := time.Now()
	if *at != "" {
		t, err := time.Parse(time.RFC3339Nano, *at)
		if err != nil {
			fmt.Fprintf(c.stderr, "credbroker explain: --at %q is not an RFC 3339 time such as 2026-03-14T15:09:26Z\n", *at)
			return exitUsage
		}
		now = t
	}
	id, err := identityFromFlags(*attestor, *subject, claims, peerClaims)
	if err != nil {
		fmt.Fprintln(c.stderr, "credbroker explain:", err)
		return exitUsage
	}
	req := policies.Request{Channel: *channel, Credential: *credential, Method: *httpMethod, Path: *reqPath, Host: *host}
	if req.Channel == broker.ChannelSocket || req.Channel == broker.ChannelMTLS {
		if req.Method == "" {
			req.Method = http.MethodGet
		}
		if req.Path == "" {
			req.Path = "/v1/credentials/" + req.Credential
		}
	}
	lc, err := loadAll(*configPath, self, nil)
	if err != nil {
		for _, line := range problemLines(err) {
			fmt.Fprintln(c.stderr, line)
		}
		return 1
	}
	in := policies.Input{Identity: id, Request: req, Now: now}
	ex := lc.policies.Explain(in)
	if *asJSON {
		b, _ := json.MarshalIndent(newExplanationJSON(lc.policies, ex), "", "  ")
		fmt.Fprintln(c.stdout, string(b))
	} else {
		known := false
		for _, cc := range lc.cfg.Credentials {
			known = known || cc.Name == in.Request.Credential
		}
		var notes []string
		if !known {
			notes = append(notes, fmt.Sprintf("credential %q is not configured; the broker would answer 404", in.Request.Credential))
		}
		writeExplanation(c.stdout, lc.policies, ex, notes...)
	}
	if !ex.Allowed() {
		return exitDenied
	}
	return 0
}

// brokerSelfFlags adds --broker-uid and --broker-gid to fs and returns
// the ids `uid: self` and `gid: self` stand for: the flags' values once fs
// is parsed, else those of this process, as when the broker itself
// compiles its policies.
func brokerSelfFlags(fs *flag.FlagSet) *policies.Self {
	self := &policies.Self{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	id := func(dst *uint32) func(string) error {
		return func(v string) error {
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return errors.New("want a number from 0 to 4294967295")
			}
			*dst = uint32(n)
			return nil
		}
	}
	fs.Func("broker-uid", `uid of the broker, which "uid: self" stands for (default: the uid this command runs as)`, id(&self.UID))
	fs.Func("broker-gid", `gid of the broker, which "gid: self" stands for (default: the gid this command runs as)`, id(&self.GID))
	return self
}

// writeExplanation prints ex, the explanation set gave, as explain does:
// the decision, the deciding policy with its policy version, the policy
// set version, the reason, the ttl cap, notes, then why each policy
// matched or not.
func writeExplanation(w io.Writer, set *policies.Set, ex policies.Explanation, notes ...string) {
	fmt.Fprintf(w, "decision:   %s\n", ex.Effect)
	if ex.Policy != "" {
		for _, s := range ex.Trace {
			if s.Policy == ex.Policy {
				fmt.Fprintf(w, "policy:     %s (%s:%d; policy version %s)\n", ex.Policy, s.File, s.Line, ex.Version)
			}
		}
	} else {
		fmt.Fprintln(w, "policy:     none matched: default deny")
	}
	fmt.Fprintf(w, "policy set: %d policies, policy set version %s\n", set.Len(), set.Version())
	fmt.Fprintf(w, "reason:     %s\n", ex.Reason)
	if ex.TTL > 0 {
		fmt.Fprintf(w, "ttl cap:    %s\n", ex.TTL)
	}
	for _, n := range notes {
		fmt.Fprintf(w, "note:       %s\n", n)
	}
	fmt.Fprintln(w, "\ntrace:")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, s := range ex.Trace {
		mark := "-"
		if s.Matched {
			mark = "matched"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s:%d\t%s\t%s\n", s.Effect, s.Policy, s.File, s.Line, mark, s.Why)
	}
	tw.Flush()
}

// explanationJSON is an explanation as explain --json and audit query
// --decision-id print it, with the two version hashes named apart: the
// deciding policy's (policy_version, absent for a default deny) and the
// whole policy set's (policy_set_version); each trace step carries its
// policy's version.
type explanationJSON struct {
	Effect           policies.Effect `json:"effect"`
	Policy           string          `json:"policy,omitempty"`
	PolicyVersion    string          `json:"policy_version,omitempty"`
	PolicySetVersion string          `json:"policy_set_version"`
	Reason           string          `json:"reason"`
	TTL              time.Duration   `json:"ttl,omitempty"` // nanoseconds
	Trace            []stepJSON      `json:"trace"`
}

// stepJSON is one policy's step of a trace, with its policy version.
type stepJSON struct {
	policies.Step
	PolicyVersion string `json:"policy_version"`
}

// newExplanationJSON describes ex, which set gave.
func newExplanationJSON(set *policies.Set, ex policies.Explanation) explanationJSON {
	out := explanationJSON{
		Effect: ex.Effect, Policy: ex.Policy, PolicySetVersion: set.Version(), Reason: ex.Reason, TTL: ex.TTL,
		Trace: make([]stepJSON, len(ex.Trace)),
	}
	if ex.Policy != "" {
		out.PolicyVersion = ex.Version
	}
	versions := map[string]string{}
	for _, p := range set.Policies() {
		versions[p.Name] = p.Version
	}
	for i, s := range ex.Trace {
		out.Trace[i] = stepJSON{Step: s, PolicyVersion: versions[s.Policy]}
	}
	return out
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
// subject the uid claim is derived from it. peerClaims, when given,
// describe the unix peer of a token caller, as the broker attaches it.
func identityFromFlags(method, subject string, claims, peerClaims []string) (attest.Identity, error) {
	if method == "" {
		method = inferMethod(subject)
	}
	if method == "" {
		return attest.Identity{}, fmt.Errorf("cannot tell the identity method of %q; pass --attestor unix|kubernetes|spiffe|github|aws", subject)
	}
	if !isMethod(method) {
		return attest.Identity{}, fmt.Errorf("--attestor %q: want one of %s", method, strings.Join(attest.Methods, ", "))
	}
	id := attest.Identity{Method: method, Subject: subject, Claims: map[string]any{}}
	if method == attest.MethodUnix {
		if uid, err := strconv.ParseInt(strings.TrimPrefix(subject, "unix:uid:"), 10, 64); err == nil {
			id.Claims["uid"] = uid
		}
	}
	if err := setClaims(id.Claims, method, "--claim", claims); err != nil {
		return id, err
	}
	if len(peerClaims) == 0 {
		return id, nil
	}
	if method == attest.MethodUnix {
		return id, errors.New("--peer-claim describes the unix peer of a token caller; a unix identity has none")
	}
	peer := attest.Identity{Method: attest.MethodUnix, Claims: map[string]any{}}
	if err := setClaims(peer.Claims, attest.MethodUnix, "--peer-claim", peerClaims); err != nil {
		return id, err
	}
	uid, ok := peer.Claims["uid"].(int64)
	if !ok {
		return id, errors.New("--peer-claim needs uid=N: the kernel always attests the peer's uid")
	}
	peer.Subject = "unix:uid:" + strconv.FormatInt(uid, 10)
	id.Peer = &peer
	return id, nil
}

// setClaims parses k=v and k:=JSON flags into claims. Unix uid, gid and
// pid are integers, as the unix attestor stores them.
func setClaims(claims map[string]any, method, flagName string, kvs []string) error {
	for _, kv := range kvs {
		if k, v, ok := strings.Cut(kv, ":="); ok {
			var val any
			if err := json.Unmarshal([]byte(v), &val); err != nil {
				return fmt.Errorf("%s %s: value is not JSON: %v", flagName, k, err)
			}
			claims[k] = normalizeJSON(val)
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("%s %q: use key=value", flagName, kv)
		}
		claims[k] = v
		if method == attest.MethodUnix && (k == "uid" || k == "gid" || k == "pid") {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("%s %s=%s: not an integer", flagName, k, v)
			}
			claims[k] = n
		}
	}
	return nil
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
