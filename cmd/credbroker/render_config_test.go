package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/credbroker/credbroker/sinks"
)

func TestRenderConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // each line of the error, after "FILE:"
	}{
		{name: "unknown top-level key", yaml: "sink:\n  - {credential: demo}\n",
			want: []string{`1: unknown key "sink" (known: sinks)`}},
		{name: "unknown key in a sink", yaml: "sinks:\n  - credential: demo\n    path: x\n    template: x\n    moed: \"0600\"\n",
			want: []string{`5: unknown key "moed" (known: credential, group, mode, on_change, owner, path, template, template_file)`}},
		{name: "command as a string", yaml: "sinks:\n  - credential: demo\n    path: x\n    template: x\n    on_change: systemctl reload app\n",
			want: []string{"5: cannot unmarshal !!str `systemc...` into []string"}},
		{name: "not YAML", yaml: "sinks:\n  - credential: demo\n    path: [x\n",
			want: []string{"2: did not find expected ',' or ']'"}},
		{name: "empty file", yaml: "", want: []string{" the file is empty: give a sinks: list (credbroker render --help shows one)"}},
		{name: "no sinks", yaml: "sinks: []\n", want: []string{"1: no sinks: give a sinks: list (credbroker render --help shows one)"}},
		{name: "every problem at its key's line", yaml: `sinks:
  - credential: demo
    path: out/demo.env
    template: "{{.value}"
    mode: 9
  - credential: ../x
    path: out/demo.env
    template_file: t.tmpl
    template: x
    owner: "a b"
    on_change: []
`, want: []string{
			`4: sinks: template: template: template:1: bad character U+007D '}'`,
			`5: sinks: mode: "9": use octal permission bits such as "0600" or "0640" (no set-id or sticky bits)`,
			`6: sinks: credential: "../x" is not a credential name (1 to 128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)`,
			`9: sinks: template: template and template_file are alternatives: set one`,
			`10: sinks: owner: "a b" is not a user or group name, nor a numeric id`,
			`11: sinks: on_change: give the command as a list: [systemctl, reload, app]`,
			`7: DIR/out/demo.env is written by the sink at FILE:2 too: one sink per file`,
		}},
		{name: "a missing key points at its sink", yaml: "sinks:\n  - {credential: demo, path: /x}\n",
			want: []string{"2: sinks: template: template (inline text) or template_file is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "render.yaml")
			_, err := parseRenderConfig(file, []byte(tt.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			var got []string
			for _, e := range unjoin(err) {
				line, ok := strings.CutPrefix(e.Error(), file+":")
				if !ok {
					line, ok = strings.CutPrefix(e.Error(), file)
				}
				if !ok {
					t.Errorf("problem %q does not start with the file", e)
				}
				got = append(got, strings.NewReplacer(file, "FILE", dir, "DIR").Replace(line))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestRenderConfigResolvesPaths(t *testing.T) {
	file := "/etc/credbroker/render.yaml"
	got, err := parseRenderConfig(file, []byte(`sinks:
  - credential: db
    path: out/db.env
    template_file: templates/db.tmpl
    on_change: [bin/reload, --now]
  - credential: db
    path: /run/app/db.json
    template: "{{json .password}}"
    mode: 0640
    owner: nobody
    group: "65534"
    on_change: [systemctl, reload, app]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []sinks.Config{
		{Credential: "db", Path: "/etc/credbroker/out/db.env", TemplateFile: "/etc/credbroker/templates/db.tmpl", OnChange: []string{"/etc/credbroker/bin/reload", "--now"}},
		{Credential: "db", Path: "/run/app/db.json", Template: "{{json .password}}", Mode: "0640", Owner: "nobody", Group: "65534", OnChange: []string{"systemctl", "reload", "app"}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d sinks, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Credential != w.Credential || g.Path != w.Path || g.Template != w.Template || g.TemplateFile != w.TemplateFile ||
			g.Mode != w.Mode || g.Owner != w.Owner || g.Group != w.Group || !slices.Equal(g.OnChange, w.OnChange) {
			t.Errorf("sink %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestRenderUsage(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "render.yaml")
	if err := os.WriteFile(cfg, []byte("sinks:\n  - {credential: demo, path: x, template: x, mode: \"8\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		code int
		want string
	}{
		{nil, exitUsage, "--config is required"},
		{[]string{"--config", cfg, "demo"}, exitUsage, `unexpected argument "demo"`},
		{[]string{"--config", cfg, "--log-format", "xml"}, exitUsage, `--log-format "xml": use json or text`},
		{[]string{"--config", cfg, "--log-level", "loud"}, exitUsage, `--log-level "loud"`},
		{[]string{"--config", cfg + ".missing"}, 1, "no such file or directory"},
		{[]string{"--config", cfg}, 1, cfg + `:2: sinks: mode: "8": use octal permission bits`},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := (&cli{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}).render(tt.args)
		if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("render %q: exit %d, stderr %q; want exit %d and %q", tt.args, code, stderr.String(), tt.code, tt.want)
		}
	}
}

func TestRenderHelp(t *testing.T) {
	for _, want := range []string{"credbroker render — keep files", "Usage:\n  credbroker render --config FILE", "on_change", "--once", "Examples:\ncredbroker render --config"} {
		if !strings.Contains(renderHelp, want) {
			t.Errorf("renderHelp lacks %q", want)
		}
	}
}

// FuzzRenderConfig feeds arbitrary files to the sinks file's loader: no
// panic, and every problem names the file.
func FuzzRenderConfig(f *testing.F) {
	for _, s := range []string{
		"sinks:\n  - {credential: demo, path: out/x, template: \"{{.value}}\"}\n",
		"sinks:\n  - credential: db\n    path: /x\n    template_file: t\n    mode: 0640\n    owner: nobody\n    on_change: [a, b]\n",
		"sink: 1", "sinks: [1, [2]]", "sinks:\n  - &a {credential: x}\n  - *a\n", "sinks: {a: b}", "- x", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cfgs, err := parseRenderConfig("/etc/render.yaml", b)
		if err == nil {
			if len(cfgs) == 0 {
				t.Fatal("no error and no sinks")
			}
			return
		}
		for _, e := range unjoin(err) {
			if !strings.HasPrefix(e.Error(), "/etc/render.yaml") {
				t.Fatalf("problem %q does not name the file", e)
			}
		}
	})
}
