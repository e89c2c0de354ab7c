// Command credbroker is the credential broker sidecar: it attests the
// workloads that call it, evaluates an access policy, hands out short-lived
// credentials and records every decision in a tamper-evident audit log.
//
//	credbroker run --config FILE|DIR [--socket PATH] [--audit-db PATH] [--checkpoint FILE] [--admin ADDR|off]
//	credbroker check --config FILE|DIR [--broker-uid N] [--broker-gid N]
//	credbroker explain --config FILE|DIR --credential NAME --subject SUBJECT [--attestor M] [--claim k=v …] [--peer-claim k=v …]
//	                   [--http-method GET] [--path P] [--channel C] [--at TIME] [--broker-uid N] [--broker-gid N] [--json]
//	credbroker get NAME [--socket PATH] [--token-file F] [--format json|env]
//	credbroker audit query|verify|export|prune --db PATH …
//	credbroker version
//
// This is the one place that knows every attestor, provider and audit
// implementation and wires them into the broker.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// exitUsage is the exit code for command-line mistakes.
const exitUsage = 2

// errUsage marks a usage error already reported.
var errUsage = errors.New("usage")

// cli carries the process's streams so commands can be tested in-process.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

func main() {
	c := &cli{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	os.Exit(c.main(os.Args[1:]))
}

const usage = `credbroker — a credential broker sidecar

Usage:
  credbroker run     --config FILE|DIR [--socket PATH] [--audit-db PATH] [--checkpoint FILE] [--admin ADDR|off]
  credbroker check   --config FILE|DIR [--broker-uid N] [--broker-gid N]
  credbroker explain --config FILE|DIR --credential NAME --subject SUBJECT [--attestor M] [--claim k=v …] [--peer-claim k=v …]
                     [--http-method GET] [--path P] [--channel C] [--at TIME] [--broker-uid N] [--broker-gid N] [--json]
  credbroker get     NAME [--socket PATH] [--token-file FILE] [--format json|env]
  credbroker audit   query|verify|export|prune --db PATH …
  credbroker version
`

func (c *cli) main(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(c.stderr, usage)
		return exitUsage
	}
	cmds := map[string]func([]string) int{
		"run":     c.run,
		"check":   c.check,
		"explain": c.explain,
		"get":     c.get,
		"audit":   c.audit,
		"version": func([]string) int { fmt.Fprintln(c.stdout, "credbroker", version); return 0 },
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(c.stdout, usage)
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(c.stderr, "credbroker: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	return cmd(args[1:])
}

// parse parses flags that may come before, between or after positional
// arguments, and returns the positionals.
func (c *cli) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(c.stderr)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, errUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// fail prints err and returns exit code 1.
func (c *cli) fail(err error) int {
	fmt.Fprintln(c.stderr, "credbroker:", err)
	return 1
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return fmt.Sprint(*s) }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
