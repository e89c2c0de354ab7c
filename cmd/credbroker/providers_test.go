package main

import (
	"path/filepath"
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
		{"unknown key in a section", `{name: x, static: {file: s, colour: red}}`, `:4: unknown key "colour" (known: env, file)`},
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
