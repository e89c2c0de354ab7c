package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// repoRoot is the repository's top directory, relative to this package's
// directory, where go test runs its tests.
const repoRoot = ".."

// credbrokerBinary builds cmd/credbroker as `make build` does (static, no
// cgo) into a directory of the test's and returns its path. Tests that
// check a file with the real binary (credbroker check) call it; the build
// cache makes every call after the first a link.
func credbrokerBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "credbroker")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/credbroker")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/credbroker: %v\n%s", err, out)
	}
	return bin
}

// readRepoFile returns the content of a file named relative to the
// repository's top directory.
func readRepoFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
