// Package policies parses, validates, compiles and evaluates credbroker
// policy documents. It is pure: callers hand it bytes and inputs, and it
// does no file or network I/O, keeps no global state, and returns an
// immutable Set that is safe for concurrent use. Its one look at the
// process is a default, like time.Now for a zero Input.Now: the caller's
// uid and gid stand for `uid: self` when CompileOptions.Self is nil.
//
// # Documents
//
// Each file holds one or more YAML documents of the form
//
//	policies:
//	  - name: payments-can-charge        # required; unique across all files; letters, digits, '.', '_', '-'
//	    effect: allow                    # required: allow or deny
//	    workloads:                       # required; any entry may match
//	      - kubernetes: {namespace: payments, service_account: payment-processor}
//	      - all: [{kubernetes: {namespace: payments}}, {unix: {exe: "/usr/bin/*"}}]
//	    credentials: [stripe-live, "orders-*"]   # required; names or globs
//	    when: 'request.method == "POST"'         # optional CEL condition
//	    ttl: 15m                                 # optional cap on the credential's lifetime (allow only)
//
// Decoding is strict: unknown or duplicate keys, wrong types, bad globs,
// bad durations, duplicate names, missing required keys, an unknown effect,
// a workload entry with no method or several, an empty selector, a github
// selector that matches every repository and conditions that do not
// compile to a boolean are all reported, each as
// "file:line: message", and Compile reports every problem at once as
// Problems.
//
// # Workloads
//
// A workload entry names one attestation method and a selector; every key
// of the selector must match (AND), and any entry of a policy may match
// (OR). An `all:` entry requires all of its entries to match, for example
// a token identity and the process that presented it.
//
//	unix:       uid, gid (integers), exe (glob), exe_sha256, pod_uid, container_id
//	kubernetes: namespace, service_account, pod_name (glob), pod_uid
//	spiffe:     id (glob on the SPIFFE ID, the identity's subject), trust_domain
//	github:     repository (glob), repository_id, repository_owner,
//	            repository_owner_id, ref, environment, workflow_ref,
//	            job_workflow_ref, event_name
//	aws:        role_arn (glob on the role ARN, the identity's subject), account, role_name
//
// A selector matches an identity of its own method, comparing keys with the
// claims of the same name. A unix selector also matches the kernel-attested
// peer (Identity.Peer) of a caller that attested with a token over the
// Unix socket. Globs match one '/'-separated segment at a time: within a
// segment `*`, `?`, `[class]` and `\` escapes follow path.Match and never
// match '/'; a segment that is exactly `**` matches any number of whole
// segments, and at least one when it ends the pattern, so
// "spiffe://td/ns/payments/**" matches every ID below .../payments but not
// .../payments itself, and "a/**/b" matches a/b and a/x/y/b. Compile
// refuses `**` within a segment ("payments**") and a '/' that is escaped
// or in a class. The same rule applies to credential globs. Other
// values compare exactly and case-sensitively, except exe_sha256, which is
// hexadecimal and compares case-insensitively. Values may be written as
// unquoted numbers (account: 123456789012) and are then taken as written; a
// decimal value also matches an integer claim of that value. Exactly
// compared values cannot contain glob characters, so that a glob written
// for a key that does not take one is reported rather than never matching.
// An absent claim never matches.
//
// `uid: self` and `gid: self` stand for the uid and gid of the broker
// that evaluates the Set, given as CompileOptions.Self (by default the
// process calling Compile). The policy's version covers the resolved
// number: `uid: self` compiled for uid 1000 has the version of `uid: 1000`.
//
// # Warnings
//
// Besides the GitHub warnings below, Set.Warnings lists selectors a
// caller can get around:
//
//   - a unix selector with exe but no exe_sha256. The kernel reports the
//     executable's path as the caller's mount namespace sees it, and an
//     unprivileged user can create a mount namespace (inside a user
//     namespace) with any binary bind-mounted over an allowed path;
//     exe_sha256 is a digest of the executable itself. Positioned at the
//     exe value.
//   - a deny policy every workload entry of which needs a token identity
//     (a kubernetes, spiffe, github or aws selector, or an `all:` with
//     one): a caller that presents no token is attested as its unix peer
//     and escapes the deny. Positioned at the `workloads:` key.
//
// # GitHub repositories
//
// Every GitHub repository can obtain a token from the same issuer, so a
// github selector must say whose repositories it means. Compile refuses a
// github selector (wherever it appears, including inside `all:`) that has
// none of repository_id, repository_owner and repository_owner_id and
// whose repository is absent or a glob every '/'-separated part of which
// is made of '*' alone, such as "*" or "*/*": ref, environment,
// workflow_ref, job_workflow_ref and event_name do not count, since every
// repository can have a ref or an environment of any name and a reusable
// workflow can be called from any repository.
//
// Names can be taken over: after a repository or its owner is renamed or
// deleted, someone else can register the old name. IDs are never reused.
// Set.Warnings therefore lists, as "file:line" of the `github:` key and a
// message, every github selector Compile accepted that pins none of
// repository_id, repository_owner_id, or a repository without glob
// characters (`*`, `?`, `[`, `\`). For example
//
//	github: {repository_owner_id: 1234, ref: refs/heads/main}  # accepted
//	github: {repository: acme/payments}                        # accepted
//	github: {repository: "acme/*"}                             # warning
//	github: {repository_owner: acme}                           # warning
//	github: {repository: "*/*", repository_owner: acme}        # warning
//	github: {ref: refs/heads/main}                             # refused
//	github: {repository: "*/*", environment: prod}             # refused
//
// # Conditions
//
// A `when` condition is a CEL expression over
//
//	identity  map: method, subject, claims (map), peer (an identity map, absent without a peer)
//	request   map: channel, credential, method, path, host (strings)
//	now       timestamp of the request
//
// It is compiled once, by Compile, and must type-check to bool; selecting
// a field these maps do not have is a compile problem. Claims are dynamic:
// compare them explicitly (identity.claims.admin == true). Each evaluation
// is bounded by CostLimit, and EvaluateContext can interrupt one. The same
// document, as JSON-compatible maps, is available from Set.Input for the
// audit log.
//
// A condition that fails to evaluate — a missing claim, a type mismatch,
// the cost limit, a cancelled context — fails closed: an allow policy whose
// condition fails does not match, and a deny policy whose condition fails
// does match, with a reason naming the error.
//
// # Decisions
//
// Deny is the default: a request is allowed only when an allow policy
// matches and no deny policy does. A policy matches when one of its
// workload entries matches the identity, the requested credential is among
// its credentials, and its condition, if any, yields true. When several
// deny policies match, the first in load order decides; when only allow
// policies match, the first in load order decides and its ttl caps the
// credential. Load order is the order of the files given to Compile, then
// the order of policies within each file.
//
// Evaluate does no work for a policy beyond comparing strings until its
// workload and credential match; only then does it build the condition
// input, once per call.
//
// Every policy has a version, a short SHA-256 over its canonical content
// (independent of formatting, comments, key order and file), and a Set's
// version covers all its policies in load order. Decisions carry the
// deciding policy's version so that the audit log can show what decided.
//
// # Usage
//
//	set, err := policies.Compile([]policies.File{{Name: "policies/payments.yaml", Data: data}})
//	var problems policies.Problems
//	if errors.As(err, &problems) {
//		for _, p := range problems {
//			fmt.Println(p) // policies/payments.yaml:7: unknown key "workload" in policy
//		}
//	}
//	d := set.Evaluate(policies.Input{Identity: id, Request: policies.Request{Channel: "socket", Credential: "stripe-live"}, Now: now})
//	if d.Effect != policies.Allow {
//		return fmt.Errorf("broker: %s", d.Reason)
//	}
package policies
