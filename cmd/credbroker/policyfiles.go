package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/credbroker/credbroker/policies"
)

// configMapPrefix starts the names of a Kubernetes ConfigMap volume's
// machinery: the ..data link and the timestamped directories it points at
// (..2026_11_29_10_00_00.123456789). Each key of the ConfigMap is a link
// name -> ..data/name beside them, so the files behind the machinery are
// read through those links, once.
const configMapPrefix = ".."

// policyFiles lists the policy files at path: the file itself, or the
// directory's *.yaml and *.yml entries in name order. Symbolic links are
// followed, so a ConfigMap volume loads; entries whose names start with ".."
// are skipped, and subdirectories are not read. An entry that is not a
// regular file, or a link that does not lead to one (a loop, a missing
// target, a directory), is an error: a policy file that cannot be read must
// not silently not apply. Every such entry is reported, as a
// policies.Problems of "file: message".
func policyFiles(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, policies.Problems{fileProblem(path, err)}
	}
	if !fi.IsDir() {
		if !fi.Mode().IsRegular() {
			return nil, policies.Problems{notRegular(path, fi)}
		}
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path) // sorted by name
	if err != nil {
		return nil, policies.Problems{fileProblem(path, err)}
	}
	var files []string
	var problems policies.Problems
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, configMapPrefix) || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
			continue
		}
		p := filepath.Join(path, n)
		fi, err := os.Stat(p)
		switch {
		case err != nil:
			problems = append(problems, fileProblem(p, err))
		case !fi.Mode().IsRegular():
			problems = append(problems, notRegular(p, fi))
		default:
			files = append(files, p)
		}
	}
	if len(problems) > 0 {
		return nil, problems
	}
	return files, nil
}

// fileProblem describes why name could not be opened or followed, without
// repeating the operation and path that an *fs.PathError carries.
func fileProblem(name string, err error) policies.Problem {
	msg := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		msg = pe.Err.Error()
	}
	switch {
	case errors.Is(err, syscall.ELOOP):
		msg = "symbolic link loop"
	case errors.Is(err, fs.ErrNotExist):
		if li, lerr := os.Lstat(name); lerr == nil && li.Mode()&fs.ModeSymlink != 0 {
			msg = "symbolic link to a missing file"
		}
	}
	return policies.Problem{File: name, Message: msg}
}

// notRegular describes an entry that is, or links to, something other than
// a regular file.
func notRegular(name string, fi fs.FileInfo) policies.Problem {
	what := "a special file"
	switch m := fi.Mode(); {
	case m.IsDir():
		what = "a directory"
	case m&fs.ModeNamedPipe != 0:
		what = "a named pipe"
	case m&fs.ModeSocket != 0:
		what = "a socket"
	case m&fs.ModeDevice != 0:
		what = "a device"
	}
	msg := "not a regular file but " + what
	if li, err := os.Lstat(name); err == nil && li.Mode()&fs.ModeSymlink != 0 {
		msg = "symbolic link to " + what + ", not to a regular file"
	}
	return policies.Problem{File: name, Message: msg}
}

// loadPolicies reads and compiles the policy files at path for this
// process, the broker: `uid: self` is its uid.
func loadPolicies(path string, configFiles []string) (*policies.Set, error) {
	return loadPoliciesFor(nil, path, configFiles)
}

// loadPoliciesFor reads and compiles the policy files at path for a broker
// whose uid and gid are self (nil: this process's). In a directory shared
// with broker configuration, files that are not policy documents are
// skipped.
func loadPoliciesFor(self *policies.Self, path string, configFiles []string) (*policies.Set, error) {
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
			return nil, fileProblem(n, err)
		}
		files = append(files, policies.File{Name: n, Data: b})
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("policies: no policy files (*.yaml, *.yml) at %s", path)
	}
	return policies.CompileOptions{Self: self}.Compile(files)
}

// policyStamp summarises the policy files at path: for each, its name, the
// file it resolves to through symbolic links, and that file's device,
// inode, size and mtime. A change means they should be reloaded. The
// resolved path and inode see a ConfigMap's ..data link swapped to a new
// directory, which may keep every name, size and mtime, and a file
// replaced by rename; an edit in place that keeps both size and mtime needs
// SIGHUP.
func policyStamp(path string) string {
	names, err := policyFiles(path)
	if err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	for _, n := range names {
		target, err := filepath.EvalSymlinks(n)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v;", n, err)
			continue
		}
		fi, err := os.Stat(target)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v;", n, err)
			continue
		}
		fmt.Fprintf(&b, "%s>%s:%d:%d", n, target, fi.Size(), fi.ModTime().UnixNano())
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			fmt.Fprintf(&b, ":%d:%d", st.Dev, st.Ino)
		}
		b.WriteByte(';')
	}
	return b.String()
}
