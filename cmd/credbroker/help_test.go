package main

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// leaves returns every command of the tree that runs, and groups those
// that hold subcommands.
func walkTree() (leaves, groups []*command) {
	var walk func(*command)
	walk = func(cmd *command) {
		for _, s := range cmd.subs {
			if s.run != nil {
				leaves = append(leaves, s)
			} else {
				groups = append(groups, s)
			}
			walk(s)
		}
	}
	walk(commandTree())
	return leaves, groups
}

// TestHelpEveryCommand asks every command and subcommand of the table for
// its help the three ways (CMD -h, CMD --help, help CMD): each exits 0,
// prints to stdout only, and shows the usage, the description, every flag
// the command parses, the environment variables and the examples.
func TestHelpEveryCommand(t *testing.T) {
	leaves, _ := walkTree()
	for _, cmd := range leaves {
		t.Run(cmd.path, func(t *testing.T) {
			fs := cmd.flags()
			if fs == nil {
				t.Fatalf("%s never calls c.parse: help cannot list its flags", cmd.path)
			}
			if fs.Name() != cmd.path {
				t.Errorf("flag set named %q, want %q: -h would not find the command's help", fs.Name(), cmd.path)
			}
			if cmd.summary == "" || cmd.about == "" || cmd.examples == "" {
				t.Errorf("summary, description or examples missing")
			}
			path := strings.Fields(cmd.path)
			for _, args := range [][]string{
				append(slices.Clone(path), "-h"),
				append(slices.Clone(path), "--help"),
				append([]string{"help"}, path...),
			} {
				out, errOut, code := runCLI(args...)
				if code != 0 || errOut != "" {
					t.Errorf("%q: exit %d, stderr %q; want 0 and nothing on stderr", args, code, errOut)
				}
				for _, want := range []string{"credbroker " + cmd.path + " — " + cmd.summary, "Usage:\n  credbroker " + cmd.path, cmd.about, "Examples:\n"} {
					if !strings.Contains(out, want) {
						t.Errorf("%q: help lacks %q:\n%s", args, want, out)
					}
				}
				fs.VisitAll(func(f *flag.Flag) {
					if !regexp.MustCompile(`(?m)^  --` + regexp.QuoteMeta(f.Name) + `( |$)`).MatchString(out) {
						t.Errorf("%q: help does not list --%s:\n%s", args, f.Name, out)
					}
				})
				for name, env := range cmd.env {
					if !strings.Contains(out, "$"+env) {
						t.Errorf("%q: help does not name $%s for --%s", args, env, name)
					}
				}
			}
		})
	}
}

// TestHelpAfterArguments: --help anywhere among the arguments shows the
// help and runs nothing.
func TestHelpAfterArguments(t *testing.T) {
	for _, args := range [][]string{
		{"get", "demo", "--help"},
		{"audit", "query", "--since", "1h", "-h"},
		{"run", "--config", "/nonexistent", "--help"},
	} {
		out, errOut, code := runCLI(args...)
		if code != 0 || errOut != "" || !strings.Contains(out, "Usage:\n  credbroker "+args[0]) {
			t.Errorf("%q: exit %d, stderr %q, stdout:\n%s", args, code, errOut, out)
		}
	}
}

// TestHelpGroupsAndTop: the top-level help lists every command and
// subcommand; a group's help lists its subcommands; both on stdout, exit 0.
// Without arguments the same list goes to stderr, exit 2.
func TestHelpGroupsAndTop(t *testing.T) {
	leaves, groups := walkTree()
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		out, errOut, code := runCLI(args...)
		if code != 0 || errOut != "" {
			t.Errorf("%q: exit %d, stderr %q", args, code, errOut)
		}
		for _, cmd := range leaves {
			if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(cmd.path) + `  +` + regexp.QuoteMeta(cmd.summary) + `$`).MatchString(out) {
				t.Errorf("%q: the command list lacks %q:\n%s", args, cmd.path, out)
			}
		}
	}
	for _, g := range groups {
		for _, args := range [][]string{{g.name, "-h"}, {g.name, "--help"}, {"help", g.name}} {
			out, errOut, code := runCLI(args...)
			if code != 0 || errOut != "" || !strings.Contains(out, g.about) {
				t.Errorf("%q: exit %d, stderr %q, stdout:\n%s", args, code, errOut, out)
			}
			for _, s := range g.subs {
				if !strings.Contains(out, "  "+s.path+" ") {
					t.Errorf("%q: lacks %s", args, s.path)
				}
			}
		}
		out, errOut, code := runCLI(g.name)
		if code != exitUsage || out != "" || !strings.Contains(errOut, "missing subcommand") {
			t.Errorf("%s alone: exit %d, stdout %q, stderr %q", g.name, code, out, errOut)
		}
	}
	out, errOut, code := runCLI()
	if code != exitUsage || out != "" || !strings.Contains(errOut, "Commands:") {
		t.Errorf("no arguments: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestDidYouMean: an unknown command, subcommand or flag is reported on
// stderr with the nearest names, exit 2, nothing on stdout.
func TestDidYouMean(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		message string
		suggest string // "" for no suggestion
	}{
		{[]string{"rnu"}, `unknown command "rnu"`, "run"},
		{[]string{"chekc", "--config", "x"}, `unknown command "chekc"`, "check"},
		{[]string{"vresion"}, `unknown command "vresion"`, "version"},
		{[]string{"audit", "qurey"}, `credbroker audit: unknown command "qurey"`, "query"},
		{[]string{"audit", "pub"}, `unknown command "pub"`, "public-key"},
		{[]string{"help", "exlpain"}, `unknown command "exlpain"`, "explain"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`, ""},
		{[]string{"--config", "x"}, "unknown flag --config: flags follow the command", ""},
		{[]string{"get", "demo", "--sokcet", "/x"}, "credbroker get: unknown flag --sokcet", "--socket"},
		{[]string{"audit", "query", "--dp", "/x"}, "credbroker audit query: unknown flag --dp", "--db"},
		{[]string{"check", "-confg", "x"}, "credbroker check: unknown flag --confg", "--config"},
		{[]string{"run", "--zzzzzz"}, "credbroker run: unknown flag --zzzzzz", ""},
	} {
		out, errOut, code := runCLI(tc.args...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, tc.message) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and %q on stderr", tc.args, code, out, errOut, tc.message)
		}
		if got := strings.Contains(errOut, "Did you mean this?\n\t"+tc.suggest+"\n"); tc.suggest != "" && !got {
			t.Errorf("%q: no suggestion of %s:\n%s", tc.args, tc.suggest, errOut)
		}
		if tc.suggest == "" && strings.Contains(errOut, "Did you mean") {
			t.Errorf("%q: suggests something for a name close to nothing:\n%s", tc.args, errOut)
		}
		if !strings.Contains(errOut, "--help' for") {
			t.Errorf("%q: does not point at --help:\n%s", tc.args, errOut)
		}
	}
	// A bad flag value is reported with the flag, and where to read more.
	_, errOut, code := runCLI("audit", "query", "--limit", "many")
	if code != exitUsage || !strings.Contains(errOut, `credbroker audit query: invalid value "many" for flag -limit`) {
		t.Errorf("bad value: exit %d, stderr %q", code, errOut)
	}
}

// TestEnvDefaults: each environment variable the table names for a flag
// does supply that flag's default, and every CREDBROKER_ variable the
// commands read for a flag's default is named in the table, so that help
// shows it.
func TestEnvDefaults(t *testing.T) {
	leaves, _ := walkTree()
	vars := map[string]bool{}
	// The commands' sources and the client package's, whose names some
	// commands use for their defaults.
	files, _ := filepath.Glob("*.go")
	clientFiles, _ := filepath.Glob("../../client/*.go")
	files = append(files, clientFiles...)
	re := regexp.MustCompile(`"(CREDBROKER_[A-Z0-9_]+)"`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			vars[m[1]] = true
		}
	}
	if !vars["CREDBROKER_SOCKET"] || !vars["CREDBROKER_AUDIT_DB"] {
		t.Fatalf("found %v in the sources; the scan is broken", vars)
	}
	for v := range vars {
		t.Setenv(v, "/canary/"+v)
	}
	named := 0
	for _, cmd := range leaves {
		cmd.flags().VisitAll(func(f *flag.Flag) {
			v, inTable := cmd.env[f.Name]
			from, _ := strings.CutPrefix(f.DefValue, "/canary/")
			switch {
			case inTable && from != v:
				t.Errorf("%s --%s: the table names $%s, but its default is %q with it set", cmd.path, f.Name, v, f.DefValue)
			case !inTable && from != f.DefValue:
				t.Errorf("%s --%s takes its default from $%s, which the table does not name", cmd.path, f.Name, from)
			case inTable:
				named++
			}
		})
	}
	if named < 3 {
		t.Errorf("only %d flags take an environment variable; get and audit have more", named)
	}
}

func TestSuggest(t *testing.T) {
	cmds := []string{"run", "check", "doctor", "explain", "get", "audit", "version", "completion", "help"}
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"rn", []string{"run"}},
		{"chcek", []string{"check"}},
		{"docter", []string{"doctor"}},
		{"comp", []string{"completion"}},
		{"versoin", []string{"version"}},
		{"x", nil},
		{"", nil},
		{strings.Repeat("a", 100), nil},
	} {
		if got := suggest(tc.name, cmds); !slices.Equal(got, tc.want) {
			t.Errorf("suggest(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"", "abc", 3}, {"abc", "abc", 0}, {"abc", "acb", 1}, {"kitten", "sitting", 3}, {"ca", "abc", 3}} {
		if d := editDistance(tc.a, tc.b); d != tc.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, d, tc.d)
		}
	}
}

// FuzzEditDistance checks the distance's properties on any input: zero to
// itself, symmetric, at most the longer length, at least the length
// difference.
func FuzzEditDistance(f *testing.F) {
	f.Add("run", "rnu")
	f.Add("", "completion")
	f.Add("public-key", "pubilc-kye")
	f.Fuzz(func(t *testing.T, a, b string) {
		if len(a) > 64 || len(b) > 64 {
			return
		}
		d := editDistance(a, b)
		if editDistance(a, a) != 0 || d != editDistance(b, a) || d > max(len(a), len(b)) || d < max(len(a)-len(b), len(b)-len(a)) {
			t.Fatalf("editDistance(%q, %q) = %d, reverse %d", a, b, d, editDistance(b, a))
		}
	})
}
