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
// header names removed, and then the credential header set once. A value
// that would put a control character in the header is refused. Redirects
// go back to the client, never followed. Bodies stream both ways; upstream
// connections are pooled on one transport per listener (TLS 1.2+, verified).
//
// Refused before any decision, and not forwarded: CONNECT (405), protocol
// upgrades including h2c and HTTP/2 prior knowledge (400), and, when served
// by Run, connections showing a request-smuggling shape (400, then closed):
// Content-Length with Transfer-Encoding, repeated Content-Length or
// Transfer-Encoding, Transfer-Encoding other than chunked or on HTTP/1.0,
// obs-fold continuation lines, bare LF line ends. Go's server accepts
// several of these and hides them from handlers, so Run follows each
// connection's raw bytes (see frame.go).
//
// Run serves on a listener the caller made: for a Unix socket, wrapped by
// the unix attestor's Listen so each request's writer is attested; the
// connection reaches the broker through broker.ConnContext. Run drains
// requests in flight for up to drain_timeout when its context ends.
//
// The shared destination-binding attacks of every HTTP-shaped listener are
// in inject/bindingtest; this package's tests run them.
package httpproxy
