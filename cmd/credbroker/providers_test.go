package main

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestCredentialProviderKeys checks that a credential's provider section
// is decoded strictly into its package's config: an unknown provider, an
// unknown or misspelt key inside a section (nested ones included), and two
// providers for one credential are each reported at their line.
func TestCredentialProviderKeys(t *testing.T) {
	for _, tt := range []struct {
		name, credential, want string
	}{
		{"unknown provider", `{name: x, mongo: {uri: y}}`, `:4: unknown key "mongo" (a credential has name, ttl and one provider: `},
		{"unknown key in a section", `{name: x, static: {file: s, colour: red}}`, `:4: unknown key "colour" (known: env, fields, file)`},
		{"two providers", "\n      name: x\n      static: {file: s}\n      oauth2: {client_id: c}", `:7: a credential has one provider; static is already given`},
		{"a known section with problems", `{name: x, oauth2: {client_id: c}}`, `:4: credential "x": oauth2: `},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{
				"credbroker.yaml": "policies: policies.yaml\n\ncredentials:\n  - " + tt.credential + "\n",
				"policies.yaml":   "policies: []\n",
				"s":               "v",
			})
			cfg := filepath.Join(dir, "credbroker.yaml")
			out, _, code := runCLI("check", "--config", cfg)
			if code != 1 || !strings.Contains(out, cfg+tt.want) {
				t.Errorf("exit %d, output lacks %q:\n%s", code, cfg+tt.want, out)
			}
		})
	}
}

// TestMergeKeepsEveryField fills every key of the configuration, merges it
// into an empty one as a file of a configuration directory would be, and
// expects it whole: a field added to the configuration can never be
// dropped by the merge. Merging it again reports every key as set twice.
func TestMergeKeepsEveryField(t *testing.T) {
	var one Config
	fill(reflect.ValueOf(&one).Elem())
	one.Listeners = nil // refused before the merge
	cfg := &Config{sources: map[string]string{}}
	if errs := cfg.mergeValue(reflect.ValueOf(cfg).Elem(), reflect.ValueOf(&one).Elem(), "", map[string]string{}); len(errs) > 0 {
		t.Fatalf("merging into an empty configuration: %v", errs)
	}
	cfg.sources = nil
	if !reflect.DeepEqual(*cfg, one) {
		t.Fatalf("the merge dropped something:\ngot  %+v\nwant %+v", *cfg, one)
	}
	cfg.sources = map[string]string{}
	errs := cfg.mergeValue(reflect.ValueOf(cfg).Elem(), reflect.ValueOf(&one).Elem(), "", map[string]string{})
	if len(errs) < 20 {
		t.Errorf("merging twice reported %d keys set twice: %v", len(errs), errs)
	}
	if len(cfg.Credentials) != 2 {
		t.Errorf("credentials of two files: %d, want both files' appended", len(cfg.Credentials))
	}
}

// fill sets every yaml key under v to a non-zero value.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString("/v")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(1)
	case reflect.Float64:
		v.SetFloat(0.5)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0))
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
				fill(v.Field(i))
			}
		}
	}
}
