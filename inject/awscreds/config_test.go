package awscreds_test

import (
	"strings"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/awscreds"
	awsprov "github.com/credbroker/credbroker/providers/aws"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  awscreds.Config
		errs []string // each in the joined error; none for valid
	}{
		{"valid", awscreds.Config{Listen: "127.0.0.1:9911", Credential: "payments-aws"}, nil},
		{"IPv6 loopback", awscreds.Config{Listen: "[::1]:9911", Credential: "payments-aws"}, nil},
		{"localhost", awscreds.Config{Listen: "localhost:9911", Credential: "payments-aws", DrainTimeout: broker.DrainTimeout(time.Second)}, nil},
		{"token optional", awscreds.Config{Listen: "127.0.0.1:9911", Credential: "c", Token: awscreds.TokenOptional}, nil},
		{"token required", awscreds.Config{Listen: "127.0.0.1:9911", Credential: "c", Token: awscreds.TokenRequired}, nil},
		{"token unknown", awscreds.Config{Listen: "127.0.0.1:9911", Credential: "c", Token: "none"}, []string{`token "none": want required (the default) or optional`}},
		{"empty", awscreds.Config{}, []string{"listen: required", "credential is required"}},
		{"all at once", awscreds.Config{Listen: "0.0.0.0:9911", Credential: "-bad", DrainTimeout: -1},
			[]string{"not a loopback address", `credential "-bad" is not a credential name`, "drain_timeout must not be negative"}},
		{"not host:port", awscreds.Config{Listen: "127.0.0.1", Credential: "c"}, []string{"want host:port"}},
		{"a unix socket", awscreds.Config{Listen: "unix:///run/x.sock", Credential: "c"}, []string{"want host:port"}},
		{"bad port", awscreds.Config{Listen: "127.0.0.1:http", Credential: "c"}, []string{`port "http"`}},
		{"a public address", awscreds.Config{Listen: "192.0.2.1:80", Credential: "c"}, []string{"not a loopback address"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.errs) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			for _, want := range tc.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Validate: %v\nwant %q in it", err, want)
				}
			}
			if !strings.HasPrefix(err.Error(), "awscreds: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

// TestConfigYAML decodes the keys users write, strictly.
func TestConfigYAML(t *testing.T) {
	var cfg awscreds.Config
	dec := yaml.NewDecoder(strings.NewReader("{listen: 127.0.0.1:9911, credential: payments-aws, token: optional, drain_timeout: 5s}"))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:9911" || cfg.Credential != "payments-aws" || cfg.Token != awscreds.TokenOptional || time.Duration(cfg.DrainTimeout) != 5*time.Second {
		t.Errorf("decoded %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
	if err := yaml.Unmarshal([]byte("{drain_timeout: -5s}"), &cfg); err == nil {
		t.Error("a negative drain_timeout decoded")
	}
	want := []string{awsprov.FieldAccessKeyID, awsprov.FieldSecretAccessKey, awsprov.FieldSessionToken}
	if got := cfg.Fields(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("Fields() = %v, want %v", got, want)
	}
	if len(cfg.Paths()) != 0 {
		t.Errorf("Paths() = %v, want none", cfg.Paths())
	}
}

func TestNewRefuses(t *testing.T) {
	if _, err := awscreds.New(awscreds.Config{}, fixedDecider{}); err == nil {
		t.Error("New accepted an empty config")
	}
	if _, err := awscreds.New(awscreds.Config{Listen: "127.0.0.1:0", Credential: "c"}, nil); err == nil {
		t.Error("New accepted no decider")
	}
}
