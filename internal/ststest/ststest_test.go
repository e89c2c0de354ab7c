package ststest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/credbroker/credbroker/attest/oidc/oidctest"
)

// TestVerification checks that the stand-in refuses what AWS STS refuses:
// each request is signed by the SDK's signer, then one part is changed.
func TestVerification(t *testing.T) {
	s := New(t, Config{})
	user, id, secret := s.AddUser("broker")
	role := s.AddRole(Role{Name: "payments", Principals: []string{user}})
	creds := awssdk.Credentials{AccessKeyID: id, SecretAccessKey: secret}
	form := url.Values{"Action": {"AssumeRole"}, "Version": {"2011-06-15"}, "RoleArn": {role}, "RoleSessionName": {"unix-uid-1000"}}
	for _, tt := range []struct {
		name     string
		creds    awssdk.Credentials
		form     url.Values
		region   string
		service  string
		at       time.Time
		tamper   func(*http.Request)
		wantCode string // "" for success
	}{
		{name: "signed by the user", wantCode: ""},
		{name: "body changed after signing", tamper: func(r *http.Request) {
			b := form.Encode() + "&DurationSeconds=43200"
			r.Body, r.ContentLength = io.NopCloser(strings.NewReader(b)), int64(len(b))
		}, wantCode: "SignatureDoesNotMatch"},
		{name: "a wrong secret key", creds: awssdk.Credentials{AccessKeyID: id, SecretAccessKey: secret + "x"}, wantCode: "SignatureDoesNotMatch"},
		{name: "an unknown key", creds: awssdk.Credentials{AccessKeyID: "AKIANOTKNOWN", SecretAccessKey: secret}, wantCode: "InvalidClientTokenId"},
		{name: "another region", region: "eu-west-1", wantCode: "SignatureDoesNotMatch"},
		{name: "another service", service: "s3", wantCode: "SignatureDoesNotMatch"},
		{name: "signed an hour ago", at: time.Now().Add(-time.Hour), wantCode: "SignatureDoesNotMatch"},
		{name: "unsigned", tamper: func(r *http.Request) { r.Header.Del("Authorization") }, wantCode: "MissingAuthenticationToken"},
		{name: "a session token on a user key", tamper: func(r *http.Request) { r.Header.Set("X-Amz-Security-Token", "x") }, wantCode: "InvalidClientTokenId"},
		{name: "a short session name", form: with(form, "RoleSessionName", "x"), wantCode: "ValidationError"},
		{name: "a duration under 900", form: with(form, "DurationSeconds", "899"), wantCode: "ValidationError"},
		{name: "an aws: tag", form: with(with(form, "Tags.member.1.Key", "aws:x"), "Tags.member.1.Value", "v"), wantCode: "InvalidParameterValue"},
		{name: "tags differing in case", form: with(with(with(with(form, "Tags.member.1.Key", "Env"), "Tags.member.1.Value", "a"), "Tags.member.2.Key", "env"), "Tags.member.2.Value", "b"), wantCode: "InvalidParameterValue"},
		{name: "a tag with a gap", form: with(with(form, "Tags.member.2.Key", "k"), "Tags.member.2.Value", "v"), wantCode: "InvalidParameterValue"},
		{name: "a bad tag value", form: with(with(form, "Tags.member.1.Key", "k"), "Tags.member.1.Value", "a,b"), wantCode: "ValidationError"},
		{name: "an unknown role", form: with(form, "RoleArn", s.RoleARN("nope")), wantCode: "AccessDenied"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, f, region, service, at := tt.creds, tt.form, tt.region, tt.service, tt.at
			if c.AccessKeyID == "" {
				c = creds
			}
			if f == nil {
				f = form
			}
			if region == "" {
				region = s.Region
			}
			if service == "" {
				service = "sts"
			}
			if at.IsZero() {
				at = time.Now()
			}
			body := f.Encode()
			req, err := http.NewRequest(http.MethodPost, s.URL+"/", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
			sum := sha256.Sum256([]byte(body))
			if err := v4.NewSigner().SignHTTP(context.Background(), c, req, hex.EncodeToString(sum[:]), service, region, at); err != nil {
				t.Fatal(err)
			}
			if tt.tamper != nil {
				tt.tamper(req)
			}
			resp, err := s.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if tt.wantCode == "" {
				if resp.StatusCode != 200 || !strings.Contains(string(b), "<AssumeRoleResponse") {
					t.Fatalf("status %d: %s", resp.StatusCode, b)
				}
				return
			}
			if resp.StatusCode < 400 || !strings.Contains(string(b), "<Code>"+tt.wantCode+"</Code>") {
				t.Fatalf("status %d: %s; want %s", resp.StatusCode, b, tt.wantCode)
			}
		})
	}
}

func with(v url.Values, k, val string) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	out.Set(k, val)
	return out
}

// TestWebIdentityVerification checks the web identity token checks: the
// issuer's key, the algorithm, the audience, the expiry.
func TestWebIdentityVerification(t *testing.T) {
	s := New(t, Config{})
	key := oidctest.NewRSAKey(t, "k1")
	issuer := "https://issuer.example.org"
	s.TrustOIDC(issuer, "sts.amazonaws.com", jose.JSONWebKeySet{Keys: []jose.JSONWebKey{key.JWK()}})
	role := s.AddRole(Role{Name: "ci", WebIdentityIssuer: issuer})
	claims := func(mod map[string]any) map[string]any {
		c := map[string]any{"iss": issuer, "sub": "repo:acme/x", "aud": "sts.amazonaws.com", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
		for k, v := range mod {
			c[k] = v
		}
		return c
	}
	for _, tt := range []struct {
		name, token, wantCode string
	}{
		{"valid", oidctest.Sign(t, key, claims(nil), nil), ""},
		{"another key", oidctest.Sign(t, oidctest.NewRSAKey(t, "k1"), claims(nil), nil), "InvalidIdentityToken"},
		{"HS256 with the public key", oidctest.SignHS256(t, "k1", claims(nil), key.PublicPEM()), "InvalidIdentityToken"},
		{"another audience", oidctest.Sign(t, key, claims(map[string]any{"aud": "other"}), nil), "InvalidIdentityToken"},
		{"an untrusted issuer", oidctest.Sign(t, key, claims(map[string]any{"iss": "https://evil.example.org"}), nil), "InvalidIdentityToken"},
		{"expired", oidctest.Sign(t, key, claims(map[string]any{"exp": time.Now().Add(-time.Second).Unix()}), nil), "ExpiredTokenException"},
		{"not a JWT", "not.a.jwt", "InvalidIdentityToken"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := url.Values{"Action": {"AssumeRoleWithWebIdentity"}, "Version": {"2011-06-15"}, "RoleArn": {role},
				"RoleSessionName": {"repo-acme-x"}, "WebIdentityToken": {tt.token}}.Encode()
			resp, err := s.Client().Post(s.URL+"/", "application/x-www-form-urlencoded", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if tt.wantCode == "" {
				if resp.StatusCode != 200 || !strings.Contains(string(b), "<SubjectFromWebIdentityToken>repo:acme/x<") {
					t.Fatalf("status %d: %s", resp.StatusCode, b)
				}
				return
			}
			if resp.StatusCode != 400 || !strings.Contains(string(b), "<Code>"+tt.wantCode+"</Code>") {
				t.Fatalf("status %d: %s; want %s", resp.StatusCode, b, tt.wantCode)
			}
		})
	}
}
