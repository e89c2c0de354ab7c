// Package httpproxy is the HTTP injection listener: a reverse proxy that
// binds one local address to one upstream and one credential, so that an
// app calls http://127.0.0.1:PORT/… (or a Unix socket) without ever
// holding the secret.
//
// In the configuration file, under listeners:
//
//	listeners:
//	  - http:
//	      listen: 127.0.0.1:8081            # or unix:///run/app/partner.sock; loopback only
//	      upstream: https://api.example.com # https, or http to loopback; a path is a base path
//	      credential: partner-api
//	      header: {name: Authorization, value: "Bearer {{.token}}"}  # the defaults
//	      tls: {ca_file: …, cert_file: …, key_file: …}              # all optional
//	      drain_timeout: 10s                                        # the default
//	  - http:                               # AWS: sign instead of setting a header
//	      listen: 127.0.0.1:9000
//	      upstream: https://s3.us-east-1.amazonaws.com
//	      credential: app-s3                # an aws_sts credential
//	      sigv4: {service: s3, region: us-east-1}                   # instead of header
//
// The header value is a restricted text/template over the credential's
// data fields: {{.field}}, {{base64 ARG}} and {{basic USER PASS}} (for
// Basic authentication: "Basic {{basic .username .password}}"). Config.Fields
// lists the fields it uses, for the loader to check against the provider.
//
// Every request is decided by the broker (Decider, which *broker.Broker
// satisfies): the caller is attested from its connection, policy sees
// channel http, the method, the path and the upstream's host, and the
// decision is recorded before anything is forwarded. A refusal is the
// socket API's JSON error. On a grant the request goes to the configured
// upstream only — the Host header, an absolute-form target and user
// information are ignored — with the client's Authorization,
// Proxy-Authorization and X-Amz-* headers and every header its Connection
// header names removed, and then the credential header set once (or the
// request signed; see below). A value
// that would put a control character in the header is refused. Redirects
// go back to the client, never followed. Bodies stream both ways; upstream
// connections are pooled on one transport per listener (TLS 1.2+, verified).
//
// Refused, and not forwarded: CONNECT (405), protocol
// upgrades including h2c and HTTP/2 prior knowledge (400), and, when served
// by Run, connections showing a request-smuggling shape (400, then closed):
// Content-Length with Transfer-Encoding, repeated Content-Length or
// Transfer-Encoding, Transfer-Encoding other than chunked or on HTTP/1.0,
// obs-fold continuation lines, bare LF line ends. Go's server accepts
// several of these and hides them from handlers, so Run follows each
// connection's raw bytes (see frame.go). Each refusal is still a decision
// of its own: the caller is attested and an error row records the reason,
// and the answer carries its decision_id.
//
// Run serves on a listener the caller made: for a Unix socket, wrapped by
// the unix attestor's Listen so each request's writer is attested; the
// connection reaches the broker through broker.ConnContext. Run drains
// requests in flight for up to drain_timeout when its context ends.
//
// # AWS Signature Version 4
//
// With sigv4 (exactly one of header and sigv4; the header default applies
// only without sigv4) the listener signs every forwarded request with
// aws-sdk-go-v2's SigV4 signer and the granted credential's
// access_key_id, secret_access_key and session_token (an aws_sts
// credential): Authorization, X-Amz-Date, X-Amz-Security-Token and, for
// S3, X-Amz-Content-Sha256, computed for the outgoing request (the
// upstream's host, the upstream path). The client signs with any dummy
// keys: its Authorization and every X-Amz-* header it sends are removed
// first, with the other headers cleaned as above; the remaining headers
// are signed as they are sent. An unmodified S3 client works when pointed
// at the listener path-style (aws-sdk-go-v2: BaseEndpoint and
// UsePathStyle); virtual-hosted addressing names the bucket in the Host
// header, which the listener ignores.
//
// The payload hash: a request without a body signs the empty body's hash.
// An S3 body is sent as UNSIGNED-PAYLOAD and streams, never buffered (the
// client's own content hash and checksums are its signature inputs and
// are dropped; Content-MD5 is kept and S3 checks it). For any other
// service the body is read whole and its SHA-256 signed, up to
// MaxSignedBody (1 MiB); a larger body is refused with 413.
//
// The client's X-Amz-* headers that describe the request's own object or
// operation are forwarded and signed: user metadata (X-Amz-Meta-*),
// server-side encryption (X-Amz-Server-Side-Encryption*), X-Amz-Storage-Class,
// X-Amz-Tagging, X-Amz-Expected-Bucket-Owner, X-Amz-Request-Payer and
// X-Amz-Target (the operation of JSON-protocol APIs such as DynamoDB). Its
// signature inputs (X-Amz-Date, X-Amz-Security-Token, X-Amz-Content-Sha256),
// X-Amz-User-Agent and checksums (X-Amz-Checksum-*,
// X-Amz-Sdk-Checksum-Algorithm) are dropped.
//
// Refused with 400 (and recorded as an error decision), because
// forwarding them would reach beyond the method and path the policy
// decided on, or re-signing would change what they do: any other X-Amz-*
// header — a copy source (another object), ACLs and grants (who may
// access the object), anything unknown; aws-chunked bodies
// (Content-Encoding: aws-chunked, X-Amz-Content-Sha256: STREAMING-…,
// X-Amz-Decoded-Content-Length, X-Amz-Trailer), whose framing lives in
// headers the listener replaces and whose chunks are signed with the
// client's keys (aws-sdk-go-v2 sends them only over https, so not to this
// listener; other SDKs: set request checksum calculation to
// when_required); presigned URLs (X-Amz-* query parameters); and a query
// string that does not parse, since the signer sends the query re-encoded.
//
// The shared destination-binding attacks of every HTTP-shaped listener are
// in inject/bindingtest; this package's tests run them.
package httpproxy
