// Package vault provides credentials read from HashiCorp Vault: one field
// of a KV v2 secret, or a leased secret from any path that issues one (the
// database secrets engine's database/creds/<role>, and the like).
//
// Under a credential, users write one of:
//
//	credentials:
//	  - name: stripe-kv
//	    ttl: 1h
//	    vault:
//	      address: https://vault.internal:8200   # https, or http to a loopback host
//	      namespace: team-a                       # Vault Enterprise; default none
//	      ca_file: secrets/vault-ca.pem           # extra trusted CAs; default system roots
//	      auth: {token_file: /run/vault/token}    # re-read when the file changes
//	      kv: {mount: secret, path: stripe, field: key}   # mount default secret
//
//	  - name: orders-db
//	    ttl: 15m
//	    vault:
//	      address: https://vault.internal:8200
//	      auth:
//	        kubernetes: {role: broker, token_file: …, mount: kubernetes}  # token_file default the projected SA token
//	        # or approle: {role_id: …, secret_id_file: secrets/secret-id, mount: approle}
//	        # or jwt: {role: broker, mount: jwt, token_file: …}
//	        # or jwt: {role: workloads, mount: jwt, pass_caller_token: true}
//	      dynamic: {path: database/creds/orders-ro, fields: [username, password]}  # fields default [username, password]
//
// The contract:
//
//   - Each Credential call is one read (the provider does not cache; the
//     lease manager does). A kv credential has the one field FieldValue; a
//     dynamic credential has the configured fields of the leased secret.
//     A missing secret, deleted version or missing field is an error
//     wrapping ErrNotFound that names the field, never a value.
//   - Expiry: capped at the smaller of the credential's TTL and the
//     request's TTL; for a dynamic lease, also at Vault's lease duration.
//     A lease whose Vault duration is longer than the cap stays alive in
//     Vault until the lease manager revokes it.
//   - Lease ids: a dynamic credential's is "vault:" + Vault's lease id; a
//     KV credential's is "vault:kv:v<version>:<random>", unique per issue.
//   - Renewer: a dynamic lease is renewed in Vault (sys/leases/renew with
//     the asked increment), and the new expiry is what Vault granted, which
//     may be shorter than asked. A KV lease is renewed when the secret's
//     current version is still the one issued; otherwise the error wraps
//     ErrNotRenewable and the credential must be issued again.
//   - Revoker: a dynamic lease is revoked in Vault (sys/leases/revoke); a
//     lease Vault no longer knows counts as revoked. A KV lease has nothing
//     upstream to end.
//   - The broker's own Vault token (token_file, kubernetes, approle, jwt
//     with token_file) is kept alive lazily, before use, without a
//     goroutine: past half its TTL it is renewed (renew-self); when it
//     cannot be renewed, stops being extended, or has expired, the provider
//     logs in again (token_file: the file's next content is read). While
//     the old token is live, a failed renewal or login falls back to it.
//     A request Vault refuses with 403 is retried once with a fresh token.
//     Dynamic leases are children of the token that read them, so Vault
//     ends them when that token is revoked or reaches its maximum TTL.
//   - jwt with pass_caller_token logs in with the caller's verified bearer
//     token (providers.Request.Token) at every request, so Vault's role
//     bindings, claim mappings and templated policies decide on the
//     workload, not the broker. The caller's Vault token is not cached
//     across requests (each issue is one login and one read): after a KV
//     read it is revoked at once; for a dynamic lease it is held in memory,
//     keyed by the lease id, until it expires, to renew and revoke that
//     lease: Revoke revokes the lease with it (synchronously when the
//     caller's Vault policy allows update on sys/leases/revoke), then the
//     token itself, which also ends the lease, though Vault does that in
//     the background. A request without a caller
//     token fails with ErrNoCallerToken. A lease issued before a restart
//     cannot be renewed (ErrNotRenewable) and ends with its token's TTL.
//   - Errors keep Vault's own messages (bounded, printable ASCII, with any
//     token, secret id or JWT redacted) and never a token; failures to log
//     in wrap ErrAuth. The provider never logs a request or its headers.
//   - The Vault client takes nothing from the VAULT_* environment
//     variables: the config is the whole truth. It retries nothing, and
//     follows no redirect, so the broker's token is sent to the configured
//     address only: point it at the active node or a load balancer (Vault
//     standbys forward requests by default).
//   - New reads ca_file only; Vault and the auth method's files are first
//     used by the first Credential call, so an unreachable Vault is
//     reported there and other credentials keep being served.
package vault
