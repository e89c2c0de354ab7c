package awscreds_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/awscreds"
	"github.com/credbroker/credbroker/inject/listener"
	"github.com/credbroker/credbroker/internal/logtest"
	"github.com/credbroker/credbroker/providers"
	awsprov "github.com/credbroker/credbroker/providers/aws"
)

// fixedDecider answers every decision with its grant or its refusal. It
// stands in for the broker where the test is about the endpoint's body,
// which the real SDK parser then reads; the broker itself is exercised by
// the tests in sdk_test.go.
type fixedDecider struct {
	grant *broker.Grant
	err   error
}

func (d fixedDecider) Decide(_ context.Context, req *broker.Request) (*broker.Grant, error) {
	if req.Invalid != nil {
		return nil, req.Invalid
	}
	return d.grant, d.err
}

func grant(data map[string]string, exp time.Time) *broker.Grant {
	c := providers.Credential{Data: map[string]providers.Secret{}, Lease: providers.Lease{ID: "aws_sts:test", Kind: awsprov.Kind, ExpiresAt: exp}}
	for k, v := range data {
		c.Data[k] = providers.NewSecret([]byte(v))
	}
	return &broker.Grant{DecisionID: "d-1", Name: "s3", Credential: c}
}

// TestBody checks the endpoint's answers byte for byte and as
// aws-sdk-go-v2's credentials/endpointcreds provider reads them.
func TestBody(t *testing.T) {
	exp := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	full := map[string]string{
		awsprov.FieldAccessKeyID: "ASIAEXAMPLE", awsprov.FieldSecretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", awsprov.FieldSessionToken: "FwoGZXIvYXdzEJr//////////wEaDE=",
	}
	without := func(field string) map[string]string {
		m := map[string]string{}
		for k, v := range full {
			if k != field {
				m[k] = v
			}
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		decider fixedDecider
		status  int
		body    string // exact, without the final new line
		sdkErr  string // in Retrieve's error; "" for success
	}{
		{
			name:    "grant",
			decider: fixedDecider{grant: grant(full, exp)},
			status:  200,
			body:    `{"AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY","Token":"FwoGZXIvYXdzEJr//////////wEaDE=","Expiration":"2026-11-30T04:00:00Z"}`,
		},
		{
			name:    "expiry in another zone, with a fraction, is UTC rounded down",
			decider: fixedDecider{grant: grant(full, time.Date(2026, 11, 30, 5, 30, 59, 999_000_000, time.FixedZone("CET", 3600)))},
			status:  200,
			body:    `{"AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY","Token":"FwoGZXIvYXdzEJr//////////wEaDE=","Expiration":"2026-11-30T04:30:59Z"}`,
		},
		{
			name: "values needing escapes",
			decider: fixedDecider{grant: grant(map[string]string{
				awsprov.FieldAccessKeyID: `A"K`, awsprov.FieldSecretAccessKey: `s\e<c>&`, awsprov.FieldSessionToken: "t\u2028",
			}, exp)},
			status: 200,
			body:   `{"AccessKeyId":"A\"K","SecretAccessKey":"s\\e\u003cc\u003e\u0026","Token":"t\u2028","Expiration":"2026-11-30T04:00:00Z"}`,
		},
		{
			name:    "no session token",
			decider: fixedDecider{grant: grant(without(awsprov.FieldSessionToken), exp)},
			status:  503,
			body:    `{"code":"unavailable","message":"credential \"s3\" cannot be served as AWS credentials: its provider yielded no session_token","error":{"code":"unavailable","message":"credential \"s3\" cannot be served as AWS credentials: its provider yielded no session_token","decision_id":"d-1"}}`,
			sdkErr:  "unavailable: credential \"s3\" cannot be served",
		},
		{
			name:    "no expiry",
			decider: fixedDecider{grant: grant(full, time.Time{})},
			status:  503,
			body:    `{"code":"unavailable","message":"credential \"s3\" cannot be served as AWS credentials: it has no expiry","error":{"code":"unavailable","message":"credential \"s3\" cannot be served as AWS credentials: it has no expiry","decision_id":"d-1"}}`,
			sdkErr:  "it has no expiry",
		},
		{
			name:    "denied",
			decider: fixedDecider{err: &broker.Error{Kind: broker.KindDenied, Message: "policy p denies it", DecisionID: "d-2"}},
			status:  403,
			body:    `{"code":"denied","message":"policy p denies it","error":{"code":"denied","message":"policy p denies it","decision_id":"d-2"}}`,
			sdkErr:  "denied: policy p denies it",
		},
		{
			name:    "not a broker error",
			decider: fixedDecider{err: errors.New("disk on fire")},
			status:  503,
			body:    `{"code":"unavailable","message":"internal error","error":{"code":"unavailable","message":"internal error"}}`,
			sdkErr:  "unavailable: internal error",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs logtest.Buffer
			e, err := awscreds.New(awscreds.Config{Listen: "127.0.0.1:0", Credential: "s3"}, tc.decider, listener.WithLogger(logs.Logger()))
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(e.Handler())
			defer srv.Close()

			req, _ := http.NewRequest("GET", srv.URL+"/creds", nil)
			req.Header.Set("Authorization", "tok")
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || string(body) != tc.body+"\n" {
				t.Errorf("got %d\n%s\nwant %d\n%s", resp.StatusCode, body, tc.status, tc.body)
			}
			if resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("headers %v, want application/json and no-store", resp.Header)
			}

			// The SDK's own reader.
			p := endpointcreds.New(srv.URL+"/creds", func(o *endpointcreds.Options) {
				o.AuthorizationToken = "tok"
				o.Retryer = nil
			})
			got, err := p.Retrieve(context.Background())
			if tc.sdkErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.sdkErr) {
					t.Errorf("Retrieve: %v, want an error saying %q", err, tc.sdkErr)
				}
				for _, v := range full {
					if strings.Contains(logs.String(), v) || (err != nil && strings.Contains(err.Error(), v)) {
						t.Errorf("a secret is in the logs or the SDK's error")
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Retrieve: %v", err)
			}
			var want struct {
				AccessKeyId, SecretAccessKey, Token string
				Expiration                          time.Time
			}
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&want); err != nil {
				t.Fatalf("the body has a field endpointcreds does not read: %v", err)
			}
			d := tc.decider.grant.Credential
			if got.AccessKeyID != string(d.Data[awsprov.FieldAccessKeyID].Reveal()) ||
				got.SecretAccessKey != string(d.Data[awsprov.FieldSecretAccessKey].Reveal()) ||
				got.SessionToken != string(d.Data[awsprov.FieldSessionToken].Reveal()) ||
				!got.CanExpire || !got.Expires.Equal(d.ExpiresAt.Truncate(time.Second)) || !got.Expires.Equal(want.Expiration) {
				t.Errorf("the SDK read %q/%v expiring %v (%v), want the grant's, expiring %v", got.AccessKeyID, got.SessionToken != "", got.Expires, got.CanExpire, d.ExpiresAt)
			}
		})
	}
}
