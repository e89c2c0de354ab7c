package main

import (
	"flag"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"text/template"

	"github.com/credbroker/credbroker/client"
)

func TestSplitCommand(t *testing.T) {
	fset := flag.NewFlagSet("exec", flag.ContinueOnError)
	fset.String("credential", "", "")
	fset.Bool("verbose", false, "")
	for _, tt := range []struct {
		args, flags, command []string
	}{
		{[]string{"--credential", "a", "--", "app", "--credential", "x"}, []string{"--credential", "a"}, []string{"app", "--credential", "x"}},
		{[]string{"--credential", "a", "app", "-v", "--", "y"}, []string{"--credential", "a"}, []string{"app", "-v", "--", "y"}},
		{[]string{"--credential=a", "--verbose", "app"}, []string{"--credential=a", "--verbose"}, []string{"app"}},
		{[]string{"--credential", "--", "app"}, []string{"--credential", "--"}, []string{"app"}}, // "--" is the flag's value
		{[]string{"--unknown", "app"}, []string{"--unknown"}, []string{"app"}},
		{[]string{"--credential", "a"}, []string{"--credential", "a"}, nil},
		{[]string{"--", "-app"}, []string{}, []string{"-app"}},
	} {
		flags, command := splitCommand(fset, tt.args)
		if !slices.Equal(flags, tt.flags) || !slices.Equal(command, tt.command) {
			t.Errorf("%q: flags %q command %q, want %q %q", tt.args, flags, command, tt.flags, tt.command)
		}
	}
}

func TestParseEnvLines(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
		err  string
	}{
		{in: "# c\n\nB=2\nA=1 with = and spaces \r\n  \n", want: []string{"A=1 with = and spaces ", "B=2"}},
		{in: "A=", want: []string{"A="}},
		{in: "_X1=y", want: []string{"_X1=y"}},
		{in: "A=1\nsecret-value\n", err: "env template line 2: want KEY=VALUE"},
		{in: "1A=x", err: "env template line 1: want KEY=VALUE"},
		{in: " A=x", err: "env template line 1: want KEY=VALUE"},
		{in: "A=1\nA=2", err: "env template line 2: A set again (line 1)"},
	} {
		got, err := parseEnvLines([]byte(tt.in))
		if tt.err != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tt.err) || strings.Contains(err.Error(), "secret") {
				t.Errorf("%q: %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("%q: %q %v, want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestDefaultEnv(t *testing.T) {
	env, err := defaultEnv([]*client.Credential{
		{Name: "orders-db", Data: map[string]string{"password": "p", "username": "u"}},
		{Name: "api.v2", Data: map[string]string{"value": "v"}},
	})
	if want := []string{"API_V2_VALUE=v", "ORDERS_DB_PASSWORD=p", "ORDERS_DB_USERNAME=u"}; err != nil || !slices.Equal(env, want) {
		t.Errorf("%q %v, want %q", env, err, want)
	}
	if got := mergeEnv([]string{"PATH=/bin", "API_V2_VALUE=old", "HOME=/root"}, env); !slices.Equal(got, []string{"PATH=/bin", "HOME=/root", "API_V2_VALUE=v", "ORDERS_DB_PASSWORD=p", "ORDERS_DB_USERNAME=u"}) {
		t.Errorf("merged %q", got)
	}
}

func TestSignalNamed(t *testing.T) {
	for name, want := range map[string]syscall.Signal{"SIGHUP": syscall.SIGHUP, "hup": syscall.SIGHUP, "USR2": syscall.SIGUSR2, "SIGNOPE": 0, "": 0, "9": 0} {
		if got := signalNamed(name); got != want {
			t.Errorf("%q: %v, want %v", name, got, want)
		}
	}
}

// TestRenderEnvTemplateBounded: a template that renders without end is
// cut at the bound.
func TestRenderEnvTemplateBounded(t *testing.T) {
	tm := template.Must(template.New("t").Funcs(template.FuncMap{"field": func(string, string) (string, error) { return "", nil }}).
		Parse(`{{ range 2000000 }}A=1{{ "\n" }}{{ end }}`))
	_, err := renderEnvTemplate(tm, []*client.Credential{{Name: "x", Data: map[string]string{"value": "v"}}})
	if err == nil || !strings.Contains(err.Error(), "output over 1048576 bytes") {
		t.Errorf("%v", err)
	}
}

// envLinesError is every error parseEnvLines may give: a line number and,
// at most, a key — never a value.
var envLinesError = regexp.MustCompile(`^env template (line \d+: (want KEY=VALUE with KEY of A-Z a-z 0-9 _, not starting with a digit|[A-Za-z_][A-Za-z0-9_]* set again \(line \d+\))|: bufio\.Scanner: token too long)$`)

// FuzzParseEnvLines: what an env template renders — secrets included — is
// parsed without panic into valid KEY=VALUE entries, and an error names a
// line, never its value.
func FuzzParseEnvLines(f *testing.F) {
	for _, s := range []string{"A=1\nB=2", "# c\n\nA= x \r\n", "A=1\nA=2", "bad line", "1=x", "=x", "A"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := parseEnvLines(b)
		if err != nil {
			if !envLinesError.MatchString(err.Error()) {
				t.Fatalf("error %q", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, kv := range env {
			k, _, ok := strings.Cut(kv, "=")
			if !ok || !envKey.MatchString(k) || seen[k] || strings.ContainsAny(kv, "\n") {
				t.Fatalf("entry %q", kv)
			}
			seen[k] = true
		}
	})
}
