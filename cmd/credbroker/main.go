// Command credbroker is the credential broker sidecar: it attests the
// workloads that call it, evaluates an access policy, hands out short-lived
// credentials and records every decision in a tamper-evident audit log.
//
//	credbroker run --config FILE|DIR [flags]      serve
//	credbroker check --config FILE|DIR            validate configuration and policies
//	credbroker doctor --config FILE|DIR           check the machine the broker runs on
//	credbroker explain --config … --credential NAME --subject SUBJECT
//	credbroker get NAME                           fetch a credential
//	credbroker exec --credential NAME -- COMMAND  run a command with credentials
//	credbroker render --config FILE               keep files rendered from credentials
//	credbroker audit query|verify|export|report|prune|public-key …
//	credbroker version | completion bash|zsh|fish | help [COMMAND]
//
// Every command is an entry of one table (commandTable), which drives
// dispatch, help, "did you mean" suggestions and shell completion. This is
// also the one place that knows every attestor, provider and audit
// implementation and wires them into the broker.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	// Policies may name time zones (now.getHours("Europe/Berlin")): the
	// database is embedded, so that they work where the host has none, as
	// in the scratch container image.
	_ "time/tzdata"
)

// exitUsage is the exit code for command-line mistakes.
const exitUsage = 2

// errUsage marks a usage error already reported (or help already shown).
var errUsage = errors.New("usage")

// cli carries the process's streams so commands can be tested in-process.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	// describe, when set, receives the flag set of the command run and
	// stops it in parse, before it does anything: help and completion list
	// a command's flags by running it this way.
	describe func(*flag.FlagSet)
	// helped is set once parse printed a command's help, which ends the
	// command with exit 0.
	helped bool
}

func main() {
	c := &cli{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	os.Exit(c.main(os.Args[1:]))
}

// command is one entry of the command table: a command, or a group of
// subcommands (audit). Help, suggestions and completion read it; the flags
// are those the command itself defines (see flags).
type command struct {
	name    string
	summary string // one line, for command lists
	// args follows the command's path on the usage line: positional
	// arguments and required flags.
	args string
	// about says what the command does, in paragraphs.
	about string
	// examples are shell lines, with # comments.
	examples string
	// env maps a flag to the environment variable that supplies its
	// default when the flag is absent.
	env map[string]string
	// values complete the positional arguments.
	values []string
	run    func(*cli, []string) int
	subs   []*command

	path string // "audit query", set by commandTree; "" for the root
}

// commandTable lists every command. Each command function defines its flags
// and calls c.parse before anything else, so that help lists exactly the
// flags it parses.
func commandTable() []*command {
	return []*command{
		{
			name: "run", summary: "serve the socket API, the listeners and the admin endpoints",
			args: "--config FILE|DIR [flags]",
			about: `Loads the configuration and policies, opens the audit log and serves the socket API, the
configured listeners and the admin endpoints (/healthz, /readyz, /metrics) until SIGINT or
SIGTERM. It then drains requests in flight and exits 0, or non-zero when one was still running
at its listener's drain_timeout and was cut. SIGHUP reloads the policies. The flags override
the configuration file's values.

Run ` + "`credbroker doctor`" + ` first on a new machine: it checks the directories, ports and
privileges the broker needs.`,
			examples: `credbroker run --config /etc/credbroker
# the quickstart's state in a directory of your own
credbroker run --config examples/quickstart --socket "$XDG_RUNTIME_DIR/cb/broker.sock" \
    --audit-db "$XDG_RUNTIME_DIR/cb/audit.db" --admin off`,
			run: (*cli).run,
		},
		{
			name: "check", summary: "validate the configuration and policies, contacting nothing",
			args: "--config FILE|DIR [flags]",
			about: `Reports every problem of the configuration and policies as "file:line: message" (exit 1),
and what passes but could be evaded as "file:line: warning: message" (exit 0). It builds the
providers without contacting them; ` + "`credbroker doctor`" + ` checks the machine and the upstreams.`,
			examples: `credbroker check --config /etc/credbroker
# policies that say "uid: self", for a broker that will run as uid 998
credbroker check --config /etc/credbroker --broker-uid 998 --broker-gid 998`,
			run: (*cli).check,
		},
		{
			name: "doctor", summary: "check the machine the broker runs on: directories, ports, privileges, upstreams",
			args: "--config FILE|DIR [flags]",
			about: `Checks what ` + "`check`" + ` cannot, on the live machine, and prints one line per check —
OK, WARN or FAIL — with what to fix: the socket and audit directories exist and are writable
by the user running it, the admin and listener ports are free (or are the running broker's),
it may read the executables and open files of other users' processes (root or CAP_SYS_PTRACE)
and shares the PID namespace of its callers, and the attestors' key endpoints and the
providers' upstreams answer. Run it as the broker's user, where the broker runs (in its
container). Exit 0 when nothing FAILs, 1 otherwise.`,
			examples: `credbroker doctor --config /etc/credbroker
# as the broker's user, with run's overrides
sudo -u credbroker credbroker doctor --config /etc/credbroker --socket /run/credbroker/broker.sock
# in a Kubernetes pod
kubectl exec POD -c credbroker -- credbroker doctor --config /etc/credbroker`,
			run: (*cli).doctor,
		},
		{
			name: "explain", summary: "dry-run a decision: the deciding policy, and why each policy matched or not",
			args: "--config FILE|DIR --credential NAME --subject SUBJECT [flags]",
			about: `Builds the policy input the broker would build for the caller and request the flags
describe, and prints the decision, the deciding policy and a trace of every policy. On the
socket API's channels the request method and path default to what the API passes (GET,
/v1/credentials/NAME). Exit 0 when the decision is allow, 3 when it is deny.`,
			examples: `credbroker explain --config /etc/credbroker --credential orders-db --subject unix:uid:1000 \
    --claim exe=/usr/bin/psql
credbroker explain --config /etc/credbroker --credential orders-db \
    --subject system:serviceaccount:shop:orders --claim namespace=shop --json`,
			run: (*cli).explain,
		},
		{
			name: "get", summary: "fetch a credential from a running broker",
			args: "NAME [flags]",
			about: `Asks the broker on its socket for the credential NAME and prints the reply: the socket
API's JSON, shell export lines (NAME_FIELD='value', NAME_EXPIRES_AT, NAME_LEASE_ID) with
--format env, or the JSON an AWS credential_process reads with --format aws-process. A refusal
is printed on stderr with its reason and decision id.

` + exitCodesHelp,
			examples: `credbroker get demo
eval "$(credbroker get orders-db --format env)"
credbroker get orders-db --token-file /var/run/secrets/tokens/credbroker
# in ~/.aws/config, for the AWS CLI and SDKs
credential_process = credbroker get aws-deploy --format aws-process`,
			env: map[string]string{"socket": "CREDBROKER_SOCKET", "aws-server-id": "CREDBROKER_AWS_SERVER_ID"},
			run: (*cli).get,
		},
		{
			name: "exec", summary: "run a command with credentials in its environment, kept fresh",
			args: "--credential NAME [flags] [--] COMMAND [ARG…]", about: execHelp + "\n\n" + exitCodesHelp, examples: execExamples,
			env: map[string]string{"socket": "CREDBROKER_SOCKET"},
			run: (*cli).exec,
		},
		{
			name: "render", summary: renderSummary, args: renderArgs, about: renderAbout, examples: renderExamples,
			run: (*cli).render,
		},
		{
			name: "audit", summary: "read, verify, report on, export and prune the audit log",
			about: `The audit log is a SQLite database of hash-chained rows, one per decision and lease
event, with signed heads. These commands read it directly: a running broker may keep writing.

Brokers configured with audit.forward.postgres also forward their logs to a fleet's central
store on PostgreSQL: query and verify read it with --fleet DSN (or --dsn-file FILE) instead of
--db, and fleet-init creates its schema (see docs/audit-fleet.md).`,
			subs: []*command{
				{
					name: "query", summary: "list decisions and lease events, oldest first",
					args: "[--db PATH] [flags]",
					about: `Prints the rows the filters select (every kind but signed_head unless --kind), as a
table, JSON lines or CSV. --lease gives a lease's decision and lifecycle, --database a
database listener's decisions for one database. --columns chooses the table's columns.

--count-by counts the decisions the filters select per group (workload, credential, policy,
decision, channel, database, attestor, install, host, in the order given), largest first; with
--limit, the largest groups only.

--follow prints the matching rows, then each new one as the broker commits it, as JSON lines
(it implies --format json), for shipping to a SIEM, until SIGINT or SIGTERM (exit 0). It wakes
when the log changes (inotify) and reads every second besides. Rows pruned before it read them
are warned about on stderr; a log replaced or cut short under it ends it with exit 1.

--decision-id shows one decision whole: every field, the policy input, and the deciding
policy as recorded, or with --policies FILE|DIR the input re-evaluated at its recorded time,
with explain's trace of every policy.

Two version hashes are told apart: policy_version is the hash of the one policy that decided,
policy_set_version the hash of the whole policy set, which a default deny records instead.
CSV text cells that begin with = + - @, a tab, a carriage return or ' get a leading ' so
that no spreadsheet runs them as formulas; numeric columns (seq, peer_pid, peer_uid,
latency_ms) are plain numbers.`,
					examples: `credbroker audit query --since 1h
credbroker audit query --db /var/lib/credbroker/audit.db --decision deny --format json
credbroker audit query --workload 'unix:uid:*' --credential orders-db --limit 20
# who was denied what this week
credbroker audit query --since 7d --decision deny --count-by workload,credential,policy
credbroker audit query --columns time,decision,subject,exe,peer,credential,lease,expiry
# ship every new decision to a SIEM
credbroker audit query --follow --kind decision | vector --config siem.toml
# one decision whole, and whether the proposed policies would decide it otherwise
credbroker audit query --decision-id 01a22b45d9113e1e2ec7b615c357da57 --policies policies/`,
					env: map[string]string{"db": "CREDBROKER_AUDIT_DB"},
					run: (*cli).auditQuery,
				},
				{
					name: "verify", summary: "walk the hash chain and check the signed heads",
					args: "[--db PATH] [flags]",
					about: `Walks the hash chain and names the first row that fails. With the public key it proves
every row up to the newest signed head and reports the rows after it; with a checkpoint it
fails when the log no longer reaches it.

With --fleet it verifies, in the fleet store, each install's chain (hashes, links, signed
heads with the install's key) and every checkpoint the install ever sent, one line per install;
an install whose log was cut short or rewritten and signed again after the store received it
fails. Exit 1 when any install fails.`,
					examples: `credbroker audit verify
credbroker audit verify --public-key broker.pub --checkpoint shipped/checkpoint.json
credbroker audit verify --dsn-file /etc/credbroker/fleet-reader.dsn`,
					env: map[string]string{"db": "CREDBROKER_AUDIT_DB"},
					run: (*cli).auditVerify,
				},
				{
					name: "export", summary: "print every row as JSON lines",
					args:     "[--db PATH]",
					about:    `Prints every row of the log, oldest first, one JSON object per line.`,
					examples: `credbroker audit export --db /var/lib/credbroker/audit.db > audit.jsonl`,
					env:      map[string]string{"db": "CREDBROKER_AUDIT_DB"},
					run:      (*cli).auditExport,
				},
				{
					name: "report", summary: auditReportSummary, args: auditReportArgs, about: auditReportAbout, examples: auditReportExamples,
					env: map[string]string{"db": "CREDBROKER_AUDIT_DB"},
					run: (*cli).auditReport,
				},
				{
					name: "prune", summary: "delete old decisions, keeping the chain verifiable",
					args: "--before DURATION|TIME [--db PATH] [flags]",
					about: `Deletes the decisions before the cut-off and signs a new chain anchor, so that the
chain stays verifiable from the oldest row kept. It refuses (exit 1) a cut-off within
audit.min_retention unless --force, which the signed anchor records.`,
					examples: `credbroker audit prune --before 720h
credbroker audit prune --before 2026-01-01T00:00:00Z --batch 5000`,
					env: map[string]string{"db": "CREDBROKER_AUDIT_DB"},
					run: (*cli).auditPrune,
				},
				{
					name: "public-key", summary: "print the checkpoint verification key, to ship off the host",
					args:     "--key-file FILE",
					about:    `Prints the Ed25519 public key that verifies this install's checkpoints and signed heads.`,
					examples: `credbroker audit public-key --key-file /var/lib/credbroker/audit.db.key > broker.pub`,
					run:      (*cli).auditPublicKey,
				},
				{
					name: "fleet-init", summary: "create or migrate the fleet store's schema on PostgreSQL",
					args: "--fleet DSN | --dsn-file FILE",
					about: `Creates the tables and indexes of a fleet's central audit store, or brings an older
schema up to date; it changes nothing when the schema is current, and may run again, or from
several places at once. Run it as a role that may create tables; then grant the brokers'
forwarding role INSERT and auditors SELECT (see docs/audit-fleet.md). A broker whose
forwarding role may create tables runs it itself.`,
					examples: `credbroker audit fleet-init --dsn-file /etc/credbroker/fleet-owner.dsn
PGPASSWORD=… credbroker audit fleet-init --fleet 'host=db.internal dbname=fleet user=fleet_owner'`,
					run: (*cli).auditFleetInit,
				},
				{name: "replay", summary: replaySummary, args: replayArgs, about: replayAbout, examples: replayExamples, env: map[string]string{"db": "CREDBROKER_AUDIT_DB"}, run: (*cli).auditReplay},
			},
		},
		{
			name: "version", summary: "print the version, commit and Go version",
			about: `Prints the version (set at build time, or the module version ` + "`go install …@vX`" + ` records),
the commit and its time, and the Go version, from the binary's build information.`,
			examples: `credbroker version
credbroker version --json`,
			run: (*cli).versionCommand,
		},
		{
			name: "completion", summary: "print a shell completion script: bash, zsh or fish",
			args: "bash|zsh|fish",
			about: `Prints a script that completes credbroker's commands, subcommands and flags, generated
from the same table as this help.`,
			examples: `source <(credbroker completion bash)       # in ~/.bashrc
source <(credbroker completion zsh)        # in ~/.zshrc, after compinit
credbroker completion fish > ~/.config/fish/completions/credbroker.fish`,
			values: []string{"bash", "zsh", "fish"},
			run:    (*cli).completion,
		},
		{
			name: "help", summary: "show a command's description, flags and examples",
			args:     "[COMMAND [SUBCOMMAND]]",
			about:    `Prints the help of a command, as ` + "`credbroker COMMAND --help`" + ` does, or the list of commands.`,
			examples: `credbroker help audit query`,
			run:      (*cli).help,
		},
	}
}

// commandTree returns the table under a root entry, with every path set.
func commandTree() *command {
	root := &command{name: "credbroker", subs: commandTable()}
	var walk func(*command)
	walk = func(cmd *command) {
		for _, s := range cmd.subs {
			s.path = strings.TrimSpace(cmd.path + " " + s.name)
			walk(s)
		}
	}
	walk(root)
	return root
}

// title is how messages name the command: "credbroker audit query".
func (cmd *command) title() string {
	return strings.TrimSpace("credbroker " + cmd.path)
}

// sub returns the subcommand called name, or nil.
func (cmd *command) sub(name string) *command {
	for _, s := range cmd.subs {
		if s.name == name {
			return s
		}
	}
	return nil
}

// find returns the command at path ("audit query"), or nil.
func (cmd *command) find(path string) *command {
	for _, name := range strings.Fields(path) {
		if cmd = cmd.sub(name); cmd == nil {
			return nil
		}
	}
	return cmd
}

// flags returns the flag set the command defines, by running it with a cli
// whose parse hands the flag set over and stops the command. Nil for a
// group.
func (cmd *command) flags() *flag.FlagSet {
	if cmd.run == nil {
		return nil
	}
	var fs *flag.FlagSet
	d := &cli{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard, describe: func(f *flag.FlagSet) { fs = f }}
	cmd.run(d, nil)
	return fs
}

func (c *cli) main(args []string) int {
	root := commandTree()
	if len(args) == 0 {
		c.printUsage(c.stderr, root)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		c.printUsage(c.stdout, root)
		return 0
	case "-version", "--version":
		return c.versionCommand(args[1:])
	}
	return c.dispatch(root, args)
}

// dispatch runs the subcommand of parent that args name.
func (c *cli) dispatch(parent *command, args []string) int {
	cmd := parent.sub(args[0])
	if cmd == nil {
		c.unknownCommand(parent, args[0])
		return exitUsage
	}
	rest := args[1:]
	if cmd.subs != nil {
		switch {
		case len(rest) == 0:
			fmt.Fprintf(c.stderr, "%s: missing subcommand\n\n", cmd.title())
			c.printUsage(c.stderr, cmd)
			return exitUsage
		case isHelpArg(rest[0]):
			c.printUsage(c.stdout, cmd)
			return 0
		}
		return c.dispatch(cmd, rest)
	}
	code := cmd.run(c, rest)
	if c.helped {
		return 0
	}
	return code
}

func isHelpArg(s string) bool { return s == "-h" || s == "-help" || s == "--help" }

// unknownCommand reports a name that is not a subcommand of parent, with
// the nearest names.
func (c *cli) unknownCommand(parent *command, name string) {
	where := parent.title()
	if strings.HasPrefix(name, "-") {
		fmt.Fprintf(c.stderr, "%s: unknown flag %s: flags follow the command (%s COMMAND --flag)\n", where, name, where)
	} else {
		fmt.Fprintf(c.stderr, "%s: unknown command %q\n", where, name)
	}
	var names []string
	for _, s := range parent.subs {
		names = append(names, s.name)
	}
	if m := suggest(strings.TrimLeft(name, "-"), names); len(m) > 0 {
		fmt.Fprintf(c.stderr, "\nDid you mean this?\n\t%s\n", strings.Join(m, "\n\t"))
	}
	fmt.Fprintf(c.stderr, "\nRun '%s --help' for the list of commands.\n", where)
}

// parse parses flags that may come before, between or after positional
// arguments, and returns the positionals. -h and --help print the
// command's help on stdout and end the command (exit 0); a flag mistake is
// reported with the nearest flag names (exit 2).
func (c *cli) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	if c.describe != nil {
		c.describe(fs)
		return nil, errUsage
	}
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			c.printHelp(c.stdout, commandTree().find(fs.Name()), fs)
			c.helped = true
			return nil, errUsage
		}
		if err != nil {
			c.flagError(fs, err)
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

// flagError reports a flag the command does not define, or a bad value.
func (c *cli) flagError(fs *flag.FlagSet, err error) {
	where := "credbroker " + fs.Name()
	name, unknown := strings.CutPrefix(err.Error(), "flag provided but not defined: ")
	if !unknown {
		fmt.Fprintf(c.stderr, "%s: %v\n", where, err)
	} else {
		name = strings.TrimLeft(name, "-")
		fmt.Fprintf(c.stderr, "%s: unknown flag --%s\n", where, name)
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		if m := suggest(name, names); len(m) > 0 {
			fmt.Fprintf(c.stderr, "\nDid you mean this?\n\t--%s\n", strings.Join(m, "\n\t--"))
		}
	}
	fmt.Fprintf(c.stderr, "\nRun '%s --help' for usage.\n", where)
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
