package client_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestStandardLibraryOnly: an application that imports the client pulls in
// nothing but the standard library.
func TestStandardLibraryOnly(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if deps := strings.Fields(string(out)); len(deps) != 1 || deps[0] != "github.com/credbroker/credbroker/client" {
		t.Errorf("the client imports %v", deps)
	}
}
