// Package oauth2 provides access tokens from an OAuth 2.0 authorization
// server (Auth0, Okta, Entra ID, Keycloak, …) through the client credentials
// grant (RFC 6749 §4.4): the broker holds the client secret, workloads get
// short-lived tokens.
//
// Under a credential, users write:
//
//	credentials:
//	  - name: partner-api
//	    ttl: 15m
//	    oauth2:
//	      token_url: https://login.example.com/oauth/token   # https, or http to a loopback host
//	      client_id: broker-partner
//	      client_secret_file: secrets/partner-client-secret  # re-read at every token request
//	      scopes: [orders:read, orders:write]                # default none (the server's default)
//	      audience: https://api.partner.example              # default none
//	      params: {resource: https://api.partner.example}    # extra form parameters; default none
//	      auth_style: basic                                  # basic (default) or post
//	      ca_file: secrets/login-ca.pem                      # extra trusted CAs; default system roots
//	      revocation_url: https://login.example.com/oauth/revoke  # RFC 7009; default none
//
// The contract:
//
//   - Each Credential call is one token request: the provider does not cache
//     (the lease manager does). The client secret file is read at every
//     request, so a rotated secret is used from the next request on; one
//     trailing newline is trimmed.
//   - An issued credential has the fields FieldToken (the access token) and
//     FieldTokenType ("Bearer" unless the server says otherwise). Its expiry
//     is the server's expires_in, capped at the request's TTL and at the
//     credential's TTL; a response without expires_in gets the cap.
//   - Redirects are followed only to the same scheme and host, so the client
//     secret is never sent to another host.
//   - Errors name the endpoint, the HTTP status and the OAuth error code and
//     description (bounded, reduced to printable ASCII, the client secret
//     in each form a request carries it and a revoked token redacted);
//     never the response body. Errors from the server are *ResponseError.
//   - A request is bounded by the caller's context and by 30 seconds.
//   - With revocation_url, the provider is a RevokingProvider (built by
//     NewRevoking, or by Open, which picks), a providers.Revoker: it
//     remembers the tokens it issued until they expire and revokes one on
//     request (RFC 7009). Revoking a lease it does not know (already
//     revoked, expired, issued before a restart) succeeds without a
//     request. Without it, a Provider (New) is not a Revoker: its tokens
//     end at their expiry.
//   - New reads the client secret file and ca_file once, so a missing file
//     fails at start; it does not contact the authorization server, whose
//     unavailability is reported by the first Credential call.
package oauth2
