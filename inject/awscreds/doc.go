// Package awscreds is the AWS container-credentials endpoint: it serves
// one configured credential (an aws_sts credential, or any whose provider
// yields access_key_id, secret_access_key and session_token) in the format
// the AWS SDKs read from AWS_CONTAINER_CREDENTIALS_FULL_URI, so that an
// unmodified AWS program gets broker-issued, per-workload credentials with
// nothing but two environment variables:
//
//	AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:9911/creds
//	AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/var/run/secrets/tokens/credbroker
//
// In the configuration file, under listeners:
//
//	listeners:
//	  - aws_credentials:
//	      listen: 127.0.0.1:9911      # loopback host:port; required
//	      credential: payments-aws    # required; its provider yields the three AWS fields
//	      token: required             # the default; optional: decide a tokenless request on its process
//	      drain_timeout: 10s          # the default
//
// The listen host must be loopback: the SDKs refuse a FULL_URI over plain
// http to any host but loopback and the ECS/EKS link-local addresses, and
// the broker attests TCP callers from the kernel's socket table on
// loopback only. Any path is served — the path of FULL_URI is the user's
// choice — and policies see it as request.path, with request.channel
// "aws" and request.method "GET"; request.host is empty.
//
// # Evidence
//
// Each request is decided by the broker (Decider, which *broker.Broker
// satisfies), with two pieces of evidence:
//
//   - the Authorization header, which the SDKs fill with the content of
//     AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (re-read at each fetch, so a
//     rotated projected token is picked up) or the value of
//     AWS_CONTAINER_AUTHORIZATION_TOKEN, verbatim. It is taken as a bearer
//     token (a Kubernetes service-account token, a JWT-SVID, …), with or
//     without a "Bearer " prefix, and verified by the broker's token
//     attestor for its issuer;
//   - the caller's process, attested from its TCP connection as on any
//     TCP loopback listener; the token's identity carries it as its peer,
//     so a policy can require both, e.g.
//     workloads: [{all: [{kubernetes: {namespace: payments}}, {unix: {uid: 1000}}]}].
//
// A request without an Authorization header is refused (401): the SDK then
// fails with the reason instead of falling back to other credentials.
// With token: optional it is decided on the caller's process alone, for
// platforms that give a workload no token to present (an ECS task, whose
// containers share the task's loopback and, with pidMode task, its
// processes); a policy then names unix claims (uid, exe, …). A
// malformed one (several headers, white space inside the token, over
// MaxTokenBytes) is refused with 400. Only GET is served; any other method
// is refused with 400, HEAD included. Every request, refused or not, is a
// decision recorded in the audit log before anything is answered.
//
// # Answers
//
// A grant is 200 with Cache-Control: no-store and
//
//	{"AccessKeyId":"ASIA…","SecretAccessKey":"…","Token":"…","Expiration":"2026-11-30T04:00:00Z"}
//
// the expiry in RFC 3339, UTC, rounded down to the second; the SDKs refresh
// a few minutes before it. A credential lacking one of the three fields or
// an expiry is refused (503) after its decision, the log naming what is
// missing, never a value. A refusal has the broker's status (400, 401,
// 403, 404, 503) and the socket API's JSON error with its code and message
// repeated at the top level, where the SDKs read them:
//
//	{"code":"denied","message":"…","error":{"code":"denied","message":"…","decision_id":"…"}}
//
// Secrets appear in the success body only, never in a log line or an
// error.
//
// Run serves on a TCP listener the caller made, keeping each connection
// for the broker through broker.ConnContext, and drains requests in flight
// for up to drain_timeout when its context ends.
package awscreds
