package awscreds

import (
	"fmt"
	"strings"

	"github.com/credbroker/credbroker/broker"
)

// MaxTokenBytes bounds the token of an Authorization header, as the broker
// bounds bearer tokens.
const MaxTokenBytes = 16 << 10

// bearerPrefix is the optional scheme before the token, matched without
// regard to case.
const bearerPrefix = "Bearer "

// Refusals of an Authorization header. None quotes the header.
var (
	errNoToken = &broker.Error{Kind: broker.KindUnauthenticated, Message: "no Authorization header: set AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (or AWS_CONTAINER_AUTHORIZATION_TOKEN) to the workload's token"}
	errLong    = &broker.Error{Kind: broker.KindBadRequest, Message: fmt.Sprintf("the Authorization token is over %d bytes", MaxTokenBytes)}
	errShape   = &broker.Error{Kind: broker.KindBadRequest, Message: "the Authorization header must be the token itself or \"Bearer <token>\": one run of printable characters without spaces"}
)

// parseAuthorization returns the bearer token of an Authorization header
// as the AWS SDKs send it: the content of
// AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (or the value of
// AWS_CONTAINER_AUTHORIZATION_TOKEN) verbatim, or, as some callers write
// it, "Bearer " and the token. Spaces and tabs around the value are
// ignored (a token file ending in a new line is fine: the server drops the
// white space around header values, and so does this). The token must be
// one run of visible ASCII characters, at most MaxTokenBytes, and not the
// word Bearer itself. An empty
// header is errNoToken; the errors are *broker.Error values that never
// quote the header.
func parseAuthorization(header string) (string, error) {
	v := strings.Trim(header, " \t\r\n")
	if len(v) >= len(bearerPrefix) && strings.EqualFold(v[:len(bearerPrefix)], bearerPrefix) {
		v = strings.TrimLeft(v[len(bearerPrefix):], " \t")
	}
	if strings.EqualFold(v, strings.TrimSpace(bearerPrefix)) {
		// The scheme without a token ("Bearer", "Bearer Bearer").
		v = ""
	}
	switch {
	case v == "":
		return "", errNoToken
	case len(v) > MaxTokenBytes:
		return "", errLong
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c >= 0x7f {
			return "", errShape
		}
	}
	return v, nil
}
