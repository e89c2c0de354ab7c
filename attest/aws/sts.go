package aws

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/credbroker/credbroker/attest"
)

// stsNamespace is the XML namespace of STS 2011-06-15 responses.
const stsNamespace = "https://sts.amazonaws.com/doc/2011-06-15/"

// callerIdentity is the result of sts:GetCallerIdentity.
type callerIdentity struct {
	ARN, UserID, Account string
}

// node is an element of a small XML document: either a leaf with text or an
// element with children and only whitespace between them.
type node struct {
	name     xml.Name
	text     string
	children []*node
}

const (
	maxXMLDepth    = 4
	maxXMLChildren = 8
)

// parseSTSResponse parses a GetCallerIdentityResponse strictly:
//
//	<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
//	  <GetCallerIdentityResult>
//	    <Arn>…</Arn> <UserId>…</UserId> <Account>…</Account>   (each exactly once, any order)
//	  </GetCallerIdentityResult>
//	  <ResponseMetadata><RequestId>…</RequestId></ResponseMetadata>   (optional)
//	</GetCallerIdentityResponse>
//
// An optional <?xml …?> declaration and whitespace are allowed; comments,
// directives, attributes other than the root's xmlns, other elements, stray
// text and trailing content are not.
func parseSTSResponse(b []byte) (callerIdentity, error) {
	var ci callerIdentity
	root, err := parseTree(b)
	if err != nil {
		return ci, err
	}
	if root.name != (xml.Name{Space: stsNamespace, Local: "GetCallerIdentityResponse"}) {
		return ci, errors.New("root is not GetCallerIdentityResponse in the STS namespace")
	}
	var result *node
	for i, c := range root.children {
		switch {
		case i == 0 && c.is("GetCallerIdentityResult"):
			result = c
		case i == 1 && c.is("ResponseMetadata"):
			if len(c.children) != 1 || !c.children[0].is("RequestId") || c.children[0].children != nil {
				return ci, errors.New("malformed ResponseMetadata")
			}
		default:
			return ci, errors.New("unexpected element in GetCallerIdentityResponse")
		}
	}
	if result == nil {
		return ci, errors.New("no GetCallerIdentityResult")
	}
	fields := map[string]*string{"Arn": &ci.ARN, "UserId": &ci.UserID, "Account": &ci.Account}
	seen := map[string]bool{}
	for _, c := range result.children {
		dst, ok := fields[c.name.Local]
		if !ok || c.name.Space != stsNamespace {
			return ci, errors.New("unexpected element in GetCallerIdentityResult")
		}
		if seen[c.name.Local] {
			return ci, fmt.Errorf("%s given twice", c.name.Local)
		}
		seen[c.name.Local] = true
		if c.children != nil || c.text == "" || strings.TrimSpace(c.text) != c.text {
			return ci, fmt.Errorf("%s is not a plain value", c.name.Local)
		}
		*dst = c.text
	}
	if len(seen) != len(fields) {
		return ci, errors.New("GetCallerIdentityResult lacks Arn, UserId or Account")
	}
	return ci, nil
}

func (n *node) is(local string) bool {
	return n.name == xml.Name{Space: stsNamespace, Local: local}
}

func parseTree(b []byte) (*node, error) {
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	var (
		root  *node
		stack []*node
		text  strings.Builder
	)
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, errors.New("invalid XML")
		}
		switch t := tok.(type) {
		case xml.ProcInst:
			if t.Target != "xml" || root != nil || len(stack) > 0 {
				return nil, errors.New("unexpected processing instruction")
			}
		case xml.StartElement:
			if root != nil && len(stack) == 0 {
				return nil, errors.New("content after the root element")
			}
			if len(stack) >= maxXMLDepth {
				return nil, errors.New("XML nested too deeply")
			}
			for _, at := range t.Attr {
				if len(stack) != 0 || at.Name != (xml.Name{Local: "xmlns"}) {
					return nil, errors.New("unexpected XML attribute")
				}
			}
			n := &node{name: t.Name}
			if len(stack) == 0 {
				root = n
			} else {
				p := stack[len(stack)-1]
				if strings.TrimSpace(text.String()) != "" {
					return nil, errors.New("text mixed with elements")
				}
				if len(p.children) >= maxXMLChildren {
					return nil, errors.New("too many XML elements")
				}
				p.children = append(p.children, n)
			}
			text.Reset()
			stack = append(stack, n)
		case xml.EndElement:
			n := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if n.children == nil {
				n.text = text.String()
			} else if strings.TrimSpace(text.String()) != "" {
				return nil, errors.New("text mixed with elements")
			}
			text.Reset()
		case xml.CharData:
			if len(stack) == 0 {
				if len(bytes.TrimSpace(t)) != 0 {
					return nil, errors.New("text outside the root element")
				}
				continue
			}
			text.Write(t)
		default: // xml.Comment, xml.Directive
			return nil, errors.New("unexpected XML comment or directive")
		}
	}
	if root == nil || len(stack) != 0 {
		return nil, errors.New("no complete root element")
	}
	return root, nil
}

// stsErrorCode returns the Code of an STS ErrorResponse, or "" when the body
// is not one or the code is not a plain identifier. The message is dropped:
// only the code is shown to callers.
func stsErrorCode(b []byte) string {
	var e struct {
		XMLName xml.Name `xml:"ErrorResponse"`
		Error   struct {
			Code string `xml:"Code"`
		} `xml:"Error"`
	}
	if xml.Unmarshal(b, &e) != nil {
		return ""
	}
	code := e.Error.Code
	if code == "" || len(code) > 64 {
		return ""
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.') {
			return ""
		}
	}
	return code
}

// identity turns a verified caller identity into an attest.Identity.
//
//	arn:P:sts::ACCOUNT:assumed-role/ROLE/SESSION → subject arn:P:iam::ACCOUNT:role/ROLE
//	arn:P:iam::ACCOUNT:user/PATH/NAME            → subject unchanged
//
// Other principals (the account root, federated users) are refused.
func (ci callerIdentity) identity() (attest.Identity, error) {
	parts := strings.SplitN(ci.ARN, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || !validPartition(parts[1]) || parts[3] != "" {
		return attest.Identity{}, errors.New("caller ARN is not an IAM or STS principal ARN")
	}
	partition, service, account, resource := parts[1], parts[2], parts[4], parts[5]
	if !validAccount(account) || account != ci.Account {
		return attest.Identity{}, errors.New("caller ARN account disagrees with Account")
	}
	claims := map[string]any{
		"account":      account,
		"principal_id": ci.UserID,
		"arn":          ci.ARN,
	}
	var subject string
	switch {
	case service == "sts" && strings.HasPrefix(resource, "assumed-role/"):
		rs := strings.Split(resource, "/")
		if len(rs) != 3 || !validName(rs[1]) || !validName(rs[2]) {
			return attest.Identity{}, errors.New("malformed assumed-role ARN")
		}
		subject = "arn:" + partition + ":iam::" + account + ":role/" + rs[1]
		claims["role_name"] = rs[1]
		claims["session_name"] = rs[2]
	case service == "iam" && strings.HasPrefix(resource, "user/"):
		rs := strings.Split(resource, "/")
		name := rs[len(rs)-1]
		for _, seg := range rs[1:] {
			if !validName(seg) {
				return attest.Identity{}, errors.New("malformed user ARN")
			}
		}
		subject = ci.ARN
		claims["user_name"] = name
	default:
		return attest.Identity{}, errors.New("caller is neither an assumed role nor an IAM user")
	}
	return attest.Identity{Method: attest.MethodAWS, Subject: subject, Claims: claims}, nil
}

func validPartition(s string) bool {
	return s != "" && len(s) <= 16 && strings.Trim(s, "abcdefghijklmnopqrstuvwxyz-") == ""
}

func validAccount(s string) bool {
	return len(s) == 12 && strings.Trim(s, "0123456789") == ""
}

// validName accepts IAM role, user, path-segment and session names:
// [A-Za-z0-9+=,.@_-]{1,128}.
func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("+=,.@_-", c) >= 0) {
			return false
		}
	}
	return true
}
