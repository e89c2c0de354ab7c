package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/credbroker/credbroker/policies"
)

// policyFiles lists the policy files at path: the file itself, or the
// directory's *.yaml and *.yml files in name order.
func policyFiles(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("policies: %w", err)
	}
	if !fi.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("policies: %w", err)
	}
	var files []string
	for _, e := range entries {
		n := e.Name()
		if e.Type().IsRegular() && (strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
			files = append(files, filepath.Join(path, n))
		}
	}
	sort.Strings(files)
	return files, nil
}

// loadPolicies reads and compiles the policy files at path. In a directory
// shared with broker configuration, files that are not policy documents are
// skipped.
func loadPolicies(path string, configFiles []string) (*policies.Set, error) {
	names, err := policyFiles(path)
	if err != nil {
		return nil, err
	}
	skip := map[string]bool{}
	for _, f := range configFiles {
		skip[filepath.Clean(f)] = true
	}
	var files []policies.File
	for _, n := range names {
		if skip[filepath.Clean(n)] {
			continue
		}
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("policies: %w", err)
		}
		files = append(files, policies.File{Name: n, Data: b})
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("policies: no policy files (*.yaml, *.yml) at %s", path)
	}
	return policies.Compile(files)
}

// policyStamp summarises the policy files' names, sizes and mtimes; a
// change means they should be reloaded.
func policyStamp(path string) string {
	names, err := policyFiles(path)
	if err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	for _, n := range names {
		fi, err := os.Stat(n)
		if err != nil {
			fmt.Fprintf(&b, "%s:missing;", n)
			continue
		}
		fmt.Fprintf(&b, "%s:%d:%d;", n, fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String()
}
