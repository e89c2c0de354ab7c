package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
)

func TestBuildInfoFrom(t *testing.T) {
	vcs := []debug.BuildSetting{
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "491ca3fb31e2be18ed3adb63af3373d3fa27cb41"},
		{Key: "vcs.time", Value: "2026-11-30T05:25:17Z"},
		{Key: "vcs.modified", Value: "true"},
	}
	for _, tc := range []struct {
		name     string
		ld       string
		bi       *debug.BuildInfo
		want     buildInfo
		wantNoGo bool
	}{
		{"no build info", "dev", nil, buildInfo{Version: "dev"}, true},
		{"go install …@v1.4.2", "dev", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.4.2"}},
			buildInfo{Version: "v1.4.2", Go: "go1.26.8"}, false},
		{"go build in a checkout", "dev", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261130052517-491ca3fb31e2+dirty"}, Settings: vcs},
			buildInfo{Version: "v0.0.0-20261130052517-491ca3fb31e2+dirty", Go: "go1.26.8", Commit: "491ca3fb31e2be18ed3adb63af3373d3fa27cb41", CommitTime: "2026-11-30T05:25:17Z", Modified: true}, false},
		{"-buildvcs=false", "dev", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			buildInfo{Version: "dev", Go: "go1.26.8"}, false},
		{"-X main.version wins", "v2.0.0-rc.1", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.4.2"}, Settings: vcs[:2]},
			buildInfo{Version: "v2.0.0-rc.1", Go: "go1.26.8", Commit: "491ca3fb31e2be18ed3adb63af3373d3fa27cb41"}, false},
	} {
		got := buildInfoFrom(tc.ld, tc.bi)
		tc.want.Platform = runtime.GOOS + "/" + runtime.GOARCH
		if tc.wantNoGo {
			tc.want.Go = runtime.Version()
		}
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// TestVersionCommand runs version in-process: the fields are printed, on
// stdout, exit 0; --version is the same; --json is one object.
func TestVersionCommand(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, errOut, code := runCLI(args...)
		if code != 0 || errOut != "" {
			t.Fatalf("%q: exit %d, stderr %q", args, code, errOut)
		}
		for _, want := range []string{"credbroker ", "\ncommit:   ", "\ngo:       " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("%q lacks %q:\n%s", args, want, out)
			}
		}
	}
	out, _, code := runCLI("version", "--json")
	var info buildInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil || code != 0 || info.Version == "" || info.Go == "" {
		t.Errorf("version --json: exit %d, %q (%v)", code, out, err)
	}
	if _, errOut, code := runCLI("version", "extra"); code != exitUsage || !strings.Contains(errOut, "takes no arguments") {
		t.Errorf("version extra: exit %d, %q", code, errOut)
	}
}

// TestVersionOfBuilds builds the binary as a release build would (with
// VCS stamping, and with the Makefile's -X main.version) and as a plain
// build: the commit is the checkout's HEAD, -X sets the version, and
// without it the version is the one the go command stamped, never "dev".
// It also checks that the Makefile still passes VERSION as -X main.version.
func TestVersionOfBuilds(t *testing.T) {
	// Others may commit while the test builds: the commit stamped is HEAD
	// as it was before or after the build.
	head := func() string {
		out, err := exec.Command("git", "rev-parse", "HEAD").Output()
		if err != nil {
			t.Fatalf("git rev-parse HEAD: %v (this test needs the git checkout)", err)
		}
		return strings.TrimSpace(string(out))
	}
	dir := t.TempDir()
	build := func(name string, args ...string) (info buildInfo, heads []string) {
		before := head()
		bin := filepath.Join(dir, name)
		cmd := exec.Command("go", append(append([]string{"build", "-o", bin}, args...), ".")...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %q: %v\n%s", args, err, out)
		}
		heads = []string{before, head()}
		out, err := exec.Command(bin, "version", "--json").Output()
		if err != nil || json.Unmarshal(out, &info) != nil {
			t.Fatalf("%s version --json: %v %q", bin, err, out)
		}
		return info, heads
	}
	release, heads := build("release", "-buildvcs=true", "-ldflags", "-X main.version=v9.8.7-test")
	if release.Version != "v9.8.7-test" || !slices.Contains(heads, release.Commit) || release.CommitTime == "" {
		t.Errorf("release build: %+v; want version v9.8.7-test, commit %s and its time", release, heads)
	}
	plain, heads := build("plain", "-buildvcs=true")
	if plain.Version == "dev" || !strings.HasPrefix(plain.Version, "v") || !slices.Contains(heads, plain.Commit) {
		t.Errorf("plain build: %+v; want the go command's version and commit %s", plain, heads)
	}
	out, err := exec.Command("make", "-n", "-C", "../..", "build", "VERSION=v9.8.7-make").Output()
	if err != nil || !strings.Contains(string(out), "-X main.version=v9.8.7-make") {
		t.Errorf("make -n build VERSION=…: %v\n%s", err, out)
	}
}
