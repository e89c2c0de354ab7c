package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3" (the
// Makefile does). Left at "dev", the version comes from the build
// information: the module version `go install …@v1.2.3` records, or the
// pseudo-version the go command stamps from the repository.
var version = "dev"

// buildInfo is what `credbroker version` reports.
type buildInfo struct {
	Version string `json:"version"`
	// Commit is the VCS revision the binary was built from; "" when the
	// build recorded none (-buildvcs=false, or not built in a repository).
	Commit string `json:"commit,omitempty"`
	// CommitTime is the commit's time, RFC 3339. Go records no build time,
	// so that builds are reproducible.
	CommitTime string `json:"commit_time,omitempty"`
	// Modified reports a build from a tree with uncommitted changes.
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// readBuildInfo returns this binary's build information.
func readBuildInfo() buildInfo {
	bi, _ := debug.ReadBuildInfo()
	return buildInfoFrom(version, bi)
}

// buildInfoFrom derives the build information from the -X version (ld,
// "dev" when unset) and the binary's recorded build information (bi, nil
// when there is none).
func buildInfoFrom(ld string, bi *debug.BuildInfo) buildInfo {
	info := buildInfo{Version: ld, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		return info
	}
	if bi.GoVersion != "" {
		info.Go = bi.GoVersion
	}
	if ld == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		info.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
		case "vcs.time":
			info.CommitTime = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// versionCommand prints the version, commit and Go version.
func (c *cli) versionCommand(args []string) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the build information as one JSON object")
	pos, err := c.parse(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(c.stderr, "credbroker version: takes no arguments, got %q\n", pos[0])
		return exitUsage
	}
	info := readBuildInfo()
	if *asJSON {
		b, _ := json.Marshal(info)
		fmt.Fprintln(c.stdout, string(b))
		return 0
	}
	fmt.Fprintf(c.stdout, "credbroker %s\n", info.Version)
	switch {
	case info.Commit == "":
		fmt.Fprintln(c.stdout, "commit:   unknown (built without VCS information: -buildvcs=false, or outside a repository)")
	case info.Modified:
		fmt.Fprintf(c.stdout, "commit:   %s (with uncommitted changes)\n", info.Commit)
	default:
		fmt.Fprintf(c.stdout, "commit:   %s\n", info.Commit)
	}
	if info.CommitTime != "" {
		fmt.Fprintf(c.stdout, "date:     %s (commit time; Go records no build time)\n", info.CommitTime)
	}
	fmt.Fprintf(c.stdout, "go:       %s %s\n", info.Go, info.Platform)
	return 0
}
