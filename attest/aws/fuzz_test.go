package aws

import (
	"github.com/credbroker/credbroker/attest/aws/ststest"

	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"method":"POST","url":"https://sts.amazonaws.com/","headers":{"Authorization":["AWS4-HMAC-SHA256 Credential=AKIA/20260102/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"],"X-Amz-Date":["20260102T150405Z"]},"body":"Action=GetCallerIdentity&Version=2011-06-15"}`))
	for _, raw := range parseRequestBad() {
		if len(raw) <= 1024 {
			f.Add([]byte(raw))
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := ParseRequest(raw)
		if err != nil {
			if len(raw) >= 16 && strings.Contains(err.Error(), string(raw)) {
				t.Errorf("error repeats the input")
			}
			return
		}
		if len(raw) > MaxRequestSize {
			t.Fatal("accepted an oversized request")
		}
		again, err := json.Marshal(r)
		if err != nil || len(again) > MaxRequestSize {
			return
		}
		r2, err := ParseRequest(again)
		if err != nil {
			t.Fatalf("re-encoded request refused: %v", err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip changed the request: %#v vs %#v", r, r2)
		}
	})
}

func FuzzParseSTSResponse(f *testing.F) {
	f.Add([]byte(fmt.Sprintf(ststest.OKXML, roleARN, "AROAX:session-1", testAccount)))
	f.Add([]byte(`<?xml version="1.0" encoding="UTF-8"?>` + fmt.Sprintf(ststest.OKXML, userARN, "AIDAX", testAccount)))
	f.Add([]byte(fmt.Sprintf(ststest.ErrorXML, "SignatureDoesNotMatch", "no")))
	f.Add([]byte("<GetCallerIdentityResponse"))
	f.Add([]byte(`<!DOCTYPE x [<!ENTITY a "b">]><GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"/>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ci, err := parseSTSResponse(b)
		_ = stsErrorCode(b)
		if err != nil {
			return
		}
		for _, v := range []string{ci.ARN, ci.UserID, ci.Account} {
			if v == "" || strings.TrimSpace(v) != v {
				t.Fatalf("accepted an empty or padded value: %#v", ci)
			}
		}
		if id, err := ci.identity(); err == nil && (id.Subject == "" || id.Claims["account"] != ci.Account) {
			t.Fatalf("bad identity %#v from %#v", id, ci)
		}
	})
}
