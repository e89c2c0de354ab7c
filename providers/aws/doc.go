// Package aws issues temporary AWS credentials from STS: each issue assumes
// the configured IAM role for the calling workload and hands back the
// session's access key id, secret access key and session token (the fields
// FieldAccessKeyID, FieldSecretAccessKey and FieldSessionToken).
//
// The package name shadows aws-sdk-go-v2's aws package, which is imported
// here as awssdk.
//
// # Configuration
//
// Under a credential, as users write it:
//
//	credentials:
//	  - name: payments-aws
//	    ttl: 15m
//	    aws_sts:
//	      role_arn: arn:aws:iam::123456789012:role/payments   # required
//	      region: eu-west-1                 # default us-east-1
//	      endpoint: https://sts.eu-west-1.amazonaws.com   # default the region's STS endpoint
//	      session_tags:                     # tag key → claim carried as the tag's value
//	        namespace: namespace
//	        workload: $subject
//	      source_identity: $subject         # claim that becomes SourceIdentity
//	      external_id: payments-broker      # sent as ExternalId
//	  - name: ci-deploy
//	    aws_sts:
//	      role_arn: arn:aws:iam::123456789012:role/ci-deploy
//	      web_identity: true                # AssumeRoleWithWebIdentity with the caller's token
//
// Two ways to assume the role:
//
//   - AssumeRole (the default), signed with the broker's own AWS
//     credentials, from aws-sdk-go-v2's default chain: environment
//     variables, shared config and credentials files, a web identity token
//     file, the ECS container endpoint, the EC2 instance role. The role's
//     trust policy names the broker's principal. Session tags, a
//     SourceIdentity and an ExternalId can be sent.
//   - AssumeRoleWithWebIdentity (web_identity: true), unsigned, with the
//     caller's own token, the one the broker verified to attest it
//     (providers.Request.Token): a Kubernetes service-account token, a
//     GitHub Actions OIDC token, a JWT-SVID. The role's trust policy names
//     the token's issuer as an OIDC provider, so AWS checks the token again
//     and CloudTrail shows the workload's own subject. A caller attested
//     without a token (a Unix-socket peer) is refused with ErrNoToken.
//     session_tags, source_identity and external_id do not apply: AWS reads
//     session tags and source identity from the token's claims.
//
// # What is derived from the caller
//
// The role session name is the caller's subject shaped to AWS's rules
// ([\w+=,.@-], 2 to 64 characters): each run of other characters becomes
// "-" (unix:uid:1000 → unix-uid-1000, system:serviceaccount:payments:api →
// system-serviceaccount-payments-api); a longer name keeps its last 55
// characters behind 8 hex digits of the subject's SHA-256; a name shorter
// than 2 characters is prefixed with "credbroker-".
//
// session_tags and source_identity name a claim of the caller's identity
// (as policies see them: namespace, repository, uid, …), or $subject or
// $method for the identity's subject or method. A tag's value is the claim's
// value (a string, boolean or number) with each character AWS refuses in tag
// values replaced by "_", cut to 256 characters; SourceIdentity is shaped
// like a session name. A caller whose identity lacks a configured claim is
// refused (ErrClaim) instead of being given credentials without the tag, so
// a role policy's condition on the tag never meets an absent tag. Tag keys
// are checked at load: 1 to 128 letters, digits, spaces and _.:/=+-@, not
// starting with aws:, unique regardless of case, at most 50.
//
// # Lifetime
//
// The expiry cap is the request's TTL (the policy's ttl), at most the
// credential's own ttl (default one hour). DurationSeconds asks for the cap
// rounded up to a second, at least 900 (STS issues no shorter session) and
// at most 43200; the role's MaxSessionDuration must allow it. The reported
// expiry is the earlier of STS's Expiration and the start of the issue plus
// the cap. Under a cap shorter than 15 minutes the upstream credential
// therefore outlives the reported expiry by up to 15 minutes: STS
// credentials cannot be revoked (only denied wholesale by a policy on the
// role), so the provider is not a providers.Revoker, and the lease manager
// lets its leases run out. The lease id is "aws_sts:" and 32 random hex
// digits; it carries no key.
//
// # Errors
//
// STS's refusals are *Error values with the AWS error code (AccessDenied,
// ValidationError, InvalidIdentityToken, ExpiredTokenException, …) and its
// message, cut to 512 bytes with the broker's secret key, session token and
// the caller's token blanked. An answer that does not decode wraps
// ErrMalformedAnswer without the decoder's detail, since the answer carries
// the issued secrets. A cancelled context returns an error wrapping
// context.Canceled. None of them carries a key or a token.
package aws
