package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// help prints the help of the command its arguments name, or the list of
// commands.
func (c *cli) help(args []string) int {
	fs := flag.NewFlagSet("help", flag.ContinueOnError)
	pos, err := c.parse(fs, args)
	if err != nil {
		return exitUsage
	}
	cmd := commandTree()
	for _, name := range pos {
		next := cmd.sub(name)
		if next == nil {
			c.unknownCommand(cmd, name)
			return exitUsage
		}
		cmd = next
	}
	if cmd.run == nil {
		c.printUsage(c.stdout, cmd)
	} else {
		c.printHelp(c.stdout, cmd, cmd.flags())
	}
	return 0
}

const tagline = "a credential broker sidecar: it attests the workloads that call it, evaluates an access policy, hands out short-lived credentials and records every decision in a tamper-evident audit log"

// printUsage prints the commands under cmd, the root or a group.
func (c *cli) printUsage(w io.Writer, cmd *command) {
	if cmd.path == "" {
		fmt.Fprintf(w, "credbroker — %s.\n\nUsage:\n  credbroker COMMAND [flags]\n\nCommands:\n", tagline)
	} else {
		fmt.Fprintf(w, "%s — %s\n\nUsage:\n  %s SUBCOMMAND [flags]\n\n%s\n\nSubcommands:\n", cmd.title(), cmd.summary, cmd.title(), cmd.about)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	var list func(*command)
	list = func(cmd *command) {
		for _, s := range cmd.subs {
			if s.run != nil {
				fmt.Fprintf(tw, "  %s\t%s\n", s.path, s.summary)
			}
			list(s)
		}
	}
	list(cmd)
	tw.Flush()
	if cmd.path == "" {
		fmt.Fprint(w, "\nRun 'credbroker help COMMAND' or 'credbroker COMMAND --help' for a command's flags and examples.\n")
	} else {
		fmt.Fprintf(w, "\nRun '%s SUBCOMMAND --help' for a subcommand's flags and examples.\n", cmd.title())
	}
}

// printHelp prints a command's description, usage, flags and examples. cmd
// may be nil for a flag set the table does not know: then only the flags
// are printed.
func (c *cli) printHelp(w io.Writer, cmd *command, fs *flag.FlagSet) {
	if cmd == nil {
		fmt.Fprintf(w, "Usage of credbroker %s:\n", fs.Name())
		printFlags(w, fs, nil)
		return
	}
	fmt.Fprintf(w, "%s — %s\n\nUsage:\n  %s", cmd.title(), cmd.summary, cmd.title())
	if cmd.args != "" {
		fmt.Fprint(w, " ", cmd.args)
	}
	fmt.Fprintf(w, "\n\n%s\n", cmd.about)
	if fs != nil && hasFlags(fs) {
		fmt.Fprint(w, "\nFlags:\n")
		printFlags(w, fs, cmd.env)
	}
	if cmd.examples != "" {
		fmt.Fprint(w, "\nExamples:\n")
		for line := range strings.SplitSeq(cmd.examples, "\n") {
			fmt.Fprintf(w, "  %s\n", line)
		}
	}
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// printFlags lists every flag of fs with its value type, usage, default
// and the environment variable env names for it, in the layout of
// flag.PrintDefaults, with the double dash people type.
func printFlags(w io.Writer, fs *flag.FlagSet, env map[string]string) {
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  --%s", f.Name)
		if typ != "" {
			fmt.Fprint(w, " ", typ)
		}
		var notes []string
		if !strings.Contains(usage, "(default") && !isZeroDefault(f) {
			if typ == "string" {
				notes = append(notes, fmt.Sprintf("default %q", f.DefValue))
			} else {
				notes = append(notes, "default "+f.DefValue)
			}
		}
		if v, ok := env[f.Name]; ok && !strings.Contains(usage, "$"+v) {
			notes = append(notes, "env $"+v)
		}
		if len(notes) > 0 {
			usage += " (" + strings.Join(notes, ", ") + ")"
		}
		fmt.Fprintf(w, "\n        %s\n", strings.ReplaceAll(usage, "\n", "\n        "))
	})
}

// isZeroDefault reports whether f's default is its type's zero value, which
// help leaves out as flag.PrintDefaults does.
func isZeroDefault(f *flag.Flag) bool {
	switch f.DefValue {
	case "", "false", "0", "0s", "[]":
		return true
	}
	return false
}

// suggest returns the candidates close to name: within a small edit
// distance (a transposition counts one), or starting with it. Nearest
// first.
func suggest(name string, candidates []string) []string {
	if name == "" || len(name) > 64 {
		return nil
	}
	limit := 2
	if len(name) <= 3 {
		limit = 1
	}
	type match struct {
		name string
		d    int
	}
	var ms []match
	for _, cand := range candidates {
		d := editDistance(name, cand)
		if d <= limit || (len(name) >= 2 && strings.HasPrefix(cand, name)) {
			ms = append(ms, match{cand, d})
		}
	}
	slices.SortStableFunc(ms, func(a, b match) int { return a.d - b.d })
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.name
	}
	return out
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and transpositions of adjacent
// bytes, each costing one.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
