package aws

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestDocumentedYAML decodes the package doc's example strictly (unknown
// keys are errors) and validates each aws_sts block.
func TestDocumentedYAML(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var block []string
	in := false
	for _, line := range strings.Split(string(doc), "\n") {
		text, isExample := strings.CutPrefix(line, "//\t")
		switch {
		case isExample && text == "credentials:":
			in = true
			block = append(block, text)
		case in && isExample:
			block = append(block, text)
		case in:
			in = false
		}
	}
	if len(block) == 0 {
		t.Fatal("doc.go has no credentials: example")
	}
	var file struct {
		Credentials []struct {
			Name   string `yaml:"name"`
			TTL    string `yaml:"ttl"`
			AWSSTS Config `yaml:"aws_sts"`
		} `yaml:"credentials"`
	}
	dec := yaml.NewDecoder(strings.NewReader(strings.Join(block, "\n")))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("the documented example does not decode: %v", err)
	}
	want := []Config{
		{
			RoleARN:        "arn:aws:iam::123456789012:role/payments",
			Region:         "eu-west-1",
			Endpoint:       "https://sts.eu-west-1.amazonaws.com",
			SessionTags:    map[string]string{"namespace": "namespace", "workload": ClaimSubject},
			SourceIdentity: ClaimSubject,
			ExternalID:     "payments-broker",
		},
		{RoleARN: "arn:aws:iam::123456789012:role/ci-deploy", WebIdentity: true},
	}
	if len(file.Credentials) != len(want) {
		t.Fatalf("decoded %d credentials, want %d", len(file.Credentials), len(want))
	}
	for i, c := range file.Credentials {
		if !reflect.DeepEqual(c.AWSSTS, want[i]) {
			t.Errorf("credential %s decoded %+v\nwant %+v", c.Name, c.AWSSTS, want[i])
		}
		if err := c.AWSSTS.Validate(); err != nil {
			t.Errorf("credential %s: the documented example is invalid: %v", c.Name, err)
		}
	}
	// Runtime-only fields are not keys.
	for _, key := range []string{"ttl: 1h", "credentials: x", "name: x", "http_client: x"} {
		dec := yaml.NewDecoder(strings.NewReader("role_arn: arn:aws:iam::123456789012:role/x\n" + key + "\n"))
		dec.KnownFields(true)
		if err := dec.Decode(&Config{}); err == nil {
			t.Errorf("%q decoded as an aws_sts key", key)
		}
	}
}
