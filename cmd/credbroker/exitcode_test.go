package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/credbroker/credbroker/client"
)

// TestExitCodes runs `credbroker get` against a real broker for each
// outcome, and explain for its decisions: each has its own exit code and a
// message that says what happened.
func TestExitCodes(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials()+"  - {name: gone, static: {file: secrets/gone}}\n")
	e.write("secrets/demo", "s3cr3t-value")
	e.write("secrets/gone", "soon gone")
	e.write("policies.yaml", strings.Replace(e2ePolicies, "[demo, other, forbidden]", "[demo, other, forbidden, gone]", 1))
	badToken := e.write("token", "e30.e30.c2ln")
	b := e.start()
	os.Remove(filepath.Join(e.dir, "secrets/gone")) // read at start: now the provider fails
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"ok", []string{"demo"}, 0, ""},
		{"denied by a rule", []string{"forbidden"}, exitDenied, "credbroker: denied by policy nobody-reads-forbidden (403 denied, decision "},
		{"denied by default", []string{"unlisted"}, exitDenied, "(403 denied, decision "},
		{"unauthenticated", []string{"demo", "--token-file", badToken}, exitUnauthenticated, "(401 unauthenticated, decision "},
		{"not found", []string{"nope"}, exitNotFound, `"nope"`},
		{"unavailable", []string{"gone"}, exitUnavailable, "(503 unavailable, decision "},
		{"malformed name", []string{"no/such name"}, exitUsage, "(400 bad_request, decision "},
		{"no name", nil, exitUsage, "give exactly one credential name"},
		{"bad format", []string{"demo", "--format", "yaml"}, exitUsage, `--format "yaml": use json, env or aws-process`},
		{"aws without server id", []string{"demo", "--aws", "--aws-server-id", ""}, exitUsage, "--aws needs --aws-server-id"},
		{"unreadable token file", []string{"demo", "--token-file", e.dir + "/none"}, 1, "bearer token: open " + e.dir + "/none"},
		{"unreachable", []string{"demo", "--socket", e.dir + "/none.sock"}, exitUnreachable,
			"credbroker: cannot reach the broker at " + e.dir + "/none.sock: connect: no such file or directory; is it running, and is that its socket? (credbroker's --socket flag or $CREDBROKER_SOCKET names another)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"get", "--socket", e.socket}, tt.args...)
			out, errOut, code := credbrokerEnv(t, []string{"CREDBROKER_AWS_SERVER_ID="}, args...)
			if code != tt.code || !strings.Contains(errOut, tt.msg) {
				t.Errorf("exit %d, want %d; stderr %q lacks %q", code, tt.code, errOut, tt.msg)
			}
			if (code == 0) != (out != "") || strings.Count(errOut, "\n") > 1 {
				t.Errorf("stdout %q, stderr %q: want the reply on success, one line of error otherwise", out, errOut)
			}
		})
	}
	b.stop(syscall.SIGTERM)
	if _, errOut, code := credbroker(t, "get", "demo", "--socket", e.socket); code != exitUnreachable || !strings.Contains(errOut, "cannot reach the broker at "+e.socket) {
		t.Errorf("after the broker stopped: exit %d %s", code, errOut)
	}

	// explain's deny is the same code as get's.
	for credential, want := range map[string]int{"demo": 0, "forbidden": exitDenied} {
		if _, errOut, code := credbroker(t, "explain", "--config", e.config, "--credential", credential, "--subject", "unix:uid:0"); code != want {
			t.Errorf("explain %s: exit %d, want %d %s", credential, code, want, errOut)
		}
	}
}

// TestExitCodeOf maps each error of the client, wrapped as callers wrap
// it, to its code.
func TestExitCodeOf(t *testing.T) {
	for err, want := range map[error]int{
		&client.Error{Code: client.CodeDenied}:          exitDenied,
		&client.Error{Code: client.CodeUnauthenticated}: exitUnauthenticated,
		&client.Error{Code: client.CodeNotFound}:        exitNotFound,
		&client.Error{Code: client.CodeBadRequest}:      exitUsage,
		&client.Error{Code: client.CodeUnavailable}:     exitUnavailable,
		&client.Error{Code: "new_code", Status: 429}:    exitUsage,
		&client.Error{Code: "new_code", Status: 502}:    exitUnavailable,
		fmt.Errorf("x: %w", client.ErrUnreachable):      exitUnreachable,
		fmt.Errorf("x: %w", client.ErrUnavailable):      exitUnavailable,
		errors.New("anything else"):                     1,
	} {
		if got := exitCodeOf(fmt.Errorf("wrapped: %w", err)); got != want {
			t.Errorf("%v: %d, want %d", err, got, want)
		}
	}
	codes := map[int]bool{0: true, 1: true, exitUsage: true}
	for _, c := range []int{exitDenied, exitUnauthenticated, exitNotFound, exitUnavailable, exitUnreachable, exitCannotRun, exitCommandMissing} {
		if codes[c] {
			t.Errorf("exit code %d used twice", c)
		}
		codes[c] = true
		if !strings.Contains(exitCodesHelp, fmt.Sprintf("%d ", c)) {
			t.Errorf("exit code %d is not in exitCodesHelp", c)
		}
	}
}

// TestDefaultSocket: the client's default is the broker's.
func TestDefaultSocket(t *testing.T) {
	if defaultSocket != client.DefaultSocket {
		t.Errorf("the broker listens on %s by default, the client connects to %s", defaultSocket, client.DefaultSocket)
	}
}
