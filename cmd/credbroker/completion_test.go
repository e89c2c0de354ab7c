package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompletionScriptsParse writes each shell's script and has the shell
// parse it (-n). bash is required; zsh and fish are parsed when installed,
// and the log says when they are not.
func TestCompletionScriptsParse(t *testing.T) {
	dir := t.TempDir()
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out, errOut, code := runCLI("completion", shell)
		if code != 0 || errOut != "" || out == "" {
			t.Fatalf("completion %s: exit %d, stderr %q", shell, code, errOut)
		}
		path := filepath.Join(dir, "credbroker."+shell)
		if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		bin, err := exec.LookPath(shell)
		if err != nil {
			if shell == "bash" {
				t.Fatal("bash is not installed: the bash completion cannot be checked")
			}
			t.Logf("%s is not installed: its completion script was generated but not parsed", shell)
			continue
		}
		if msg, err := exec.Command(bin, "-n", path).CombinedOutput(); err != nil {
			t.Errorf("%s -n: %v\n%s\n%s", shell, err, msg, out)
		}
	}
	if _, errOut, code := runCLI("completion", "powershell"); code != exitUsage || !strings.Contains(errOut, "bash, zsh or fish") {
		t.Errorf("completion powershell: exit %d, %q", code, errOut)
	}
}

// TestBashCompletes loads the bash script into bash and asks it to
// complete command lines, as bash does on TAB.
func TestBashCompletes(t *testing.T) {
	script, _, _ := runCLI("completion", "bash")
	for _, tc := range []struct {
		line string // the words typed; a trailing space starts a new word
		want string // COMPREPLY, space-separated
	}{
		{"credbroker au", "audit"},
		{"credbroker d", "doctor"},
		{"credbroker audit ", "query verify export report prune public-key fleet-init replay --help"},
		{"credbroker audit q", "query"},
		{"credbroker audit query --d", "--database --db --decision --decision-id --dsn-file"},
		{"credbroker get --so", "--socket"},
		{"credbroker get demo --format json --tok", "--token-file"},
		{"credbroker completion ", "bash zsh fish --help"},
		{"credbroker help ex", "explain exec"},
		{"credbroker --v", "--version"},
		{"credbroker run --config ", ""}, // a value: bash completes file names
		{"credbroker run --config x --acc", "--accept-audit-rewind"},
	} {
		words := strings.Fields(tc.line)
		if strings.HasSuffix(tc.line, " ") {
			words = append(words, "")
		}
		var quoted []string
		for _, w := range words {
			quoted = append(quoted, shellQuote(w))
		}
		prog := script + "\nCOMP_WORDS=(" + strings.Join(quoted, " ") + ")\nCOMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n_credbroker\necho \"${COMPREPLY[*]}\"\n"
		out, err := exec.Command("bash", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.line, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != tc.want {
			t.Errorf("%q completes to %q, want %q", tc.line, got, tc.want)
		}
	}
}

// TestCompletionCoversTable: every command path and flag of the table is
// in every script.
func TestCompletionCoversTable(t *testing.T) {
	scripts := map[string]string{}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		scripts[shell], _, _ = runCLI("completion", shell)
	}
	for _, n := range completionNodes(commandTree()) {
		for _, s := range n.subs {
			step := shellQuote(n.path + "/" + s.name)
			if !strings.Contains(scripts["bash"], step) || !strings.Contains(scripts["zsh"], step) || !strings.Contains(scripts["fish"], fishQuote(n.path+"/"+s.name)) {
				t.Errorf("a script lacks the step %s", step)
			}
		}
		for _, f := range n.flags {
			fish := fishQuote("__credbroker_at "+fishQuote(n.path)) + " -l " + fishQuote(f.name)
			if !strings.Contains(scripts["bash"], "--"+f.name) || !strings.Contains(scripts["zsh"], "'--"+f.name+":") || !strings.Contains(scripts["fish"], fish) {
				t.Errorf("%q: a script lacks --%s", n.path, f.name)
			}
		}
	}
}
