// Package aws attests AWS IAM principals the way Vault's AWS auth method
// does: the caller signs an sts:GetCallerIdentity request with its own
// credentials and hands the signed parts to the broker, which sends the
// request to STS itself and believes only STS's answer.
//
// # Wire format
//
// In the socket API body the signed request travels as
//
//	{"aws_iam": {"method": "POST",
//	             "url": "https://sts.amazonaws.com/",
//	             "headers": {"Authorization": ["AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…"],
//	                         "Content-Type": ["application/x-www-form-urlencoded; charset=utf-8"],
//	                         "Credbroker-Server-Id": ["credbroker.example.org"],
//	                         "Credbroker-Nonce": ["…"],
//	                         "X-Amz-Date": ["20260102T150405Z"],
//	                         "X-Amz-Security-Token": ["…"]},
//	             "body": "Action=GetCallerIdentity&Version=2011-06-15"}}
//
// headers maps a name to its values; body is the plain request body (not
// base64). [ParseRequest] decodes the value of "aws_iam" strictly (16 KiB at
// most, exact member names, unknown or repeated members refused). [Sign]
// produces it on the client side.
//
// # What Attest checks
//
// [Attestor.Attest] never forwards what it was given. It rebuilds the request
// from fixed parts — POST, the root of Config.STSEndpoint, the body
// "Action=GetCallerIdentity&Version=2011-06-15" — and copies only the headers
// named in the Authorization header's SignedHeaders, plus Authorization and
// X-Amz-Security-Token. Before sending it refuses, with an *attest.Error
// whose Reason says why:
//
//   - a method other than POST ("method must be POST");
//   - a URL other than exactly the endpoint's root, including another scheme,
//     port, path or a query ("another host");
//   - another body: another Action ("another action") or anything beyond the
//     exact body ("extra body parameters");
//   - a signature scoped to a service other than sts or a region other than
//     Config.Region;
//   - a Credbroker-Server-Id header that is absent or not signed ("missing or
//     unsigned server-id header") or not equal to Config.ServerID ("wrong
//     server-id"), which stops a service the caller signed for from replaying
//     the request here;
//   - an X-Amz-Date older than Config.MaxAge or more than a minute ahead
//     ("stale signature");
//   - a signature already seen within MaxAge ("replay"). Signatures are
//     reserved in Config.Replay (a [ReplayStore], which keeps only their
//     SHA-256) before STS is called and kept when STS accepts them. The
//     in-memory default forgets them at a restart; attest/aws/replaydb keeps
//     them in a SQLite file so that they survive one. A store is bounded and
//     refuses new requests when full of unexpired entries rather than forget
//     one ("too many recent attestations, retry later"), and a signature it
//     cannot record is refused ("replay store unavailable").
//
// Redirects are never followed (a 3xx fails), the response is read up to
// 64 KiB, and the GetCallerIdentityResponse XML is parsed strictly: exact
// element names in the STS namespace, exactly one Arn, UserId and Account,
// nothing else ("malformed STS response"). A 4xx from STS is "STS rejected
// the signature: CODE" with the STS error code (such as
// SignatureDoesNotMatch); a 5xx is "STS unavailable". No Reason, error text or
// log line contains a signature, a session token or a secret key.
//
// # Identity
//
//	Method:  "aws"
//	Subject: the principal's ARN, assumed roles normalised to their role:
//	         arn:aws:sts::123456789012:assumed-role/payments/session
//	           → arn:aws:iam::123456789012:role/payments
//	         IAM users are kept as they are: arn:aws:iam::123456789012:user/ops/alice
//	Claims:  account, principal_id (STS UserId), arn (the raw caller ARN), and
//	         role_name and session_name for assumed roles, user_name for users.
//
// An assumed-role ARN does not carry the role's path, and recovering it
// would need iam:GetRole with the broker's own credentials, so the subject of
// a role with path /team/ is arn:aws:iam::123456789012:role/payments, not
// …:role/team/payments; write policies without role paths. Other principals
// (the account root, federated users) are refused ("unsupported principal
// type").
//
// Usage:
//
//	a, err := aws.New(aws.Config{ServerID: "credbroker.example.org", Logger: logger})
//	if err != nil { … }
//	r, err := aws.ParseRequest(body.AWSIAM) // json.RawMessage of "aws_iam"
//	if err != nil { … 400 or 401 … }
//	id, err := a.Attest(ctx, r)
//	if errors.Is(err, attest.ErrFailed) { … 401 … }
//
// Client side:
//
//	cfg, _ := config.LoadDefaultConfig(ctx)
//	r, err := aws.Sign(ctx, cfg.Credentials, "credbroker.example.org", "us-east-1", "", time.Now())
//	b, _ := json.Marshal(map[string]any{"aws_iam": r})
package aws
