package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"syscall"

	yaml "go.yaml.in/yaml/v3"

	"github.com/credbroker/credbroker/client"
	"github.com/credbroker/credbroker/sinks"
)

// The render command's entry in the command table: summary, usage
// arguments, description and examples; renderHelp is all of it.
const (
	renderSummary = "keep files rendered from credentials, for apps that read them"
	renderArgs    = "--config FILE [flags]"
	renderAbout   = `Asks the broker's socket API for each sink's credential — as this process, which the broker
attests and authorises like any caller, so a policy must allow render's own user (or the
identity its --token-file proves) — and writes each sink's file from its template. A file is
replaced atomically (a reader sees the old file or the new one), with its mode, owner and group
from the start, and only when its content or metadata differ. Each credential is fetched once
for all its sinks, again at half its remaining life, and after a failure with backoff (1s
doubling to 1m, jittered); the file keeps its previous content meanwhile. A sink's on_change
command runs once after each change of its file's content: without a shell, its output on
render's stderr, its environment render's own plus CREDBROKER_SINK_PATH and
CREDBROKER_SINK_CREDENTIAL — never a secret. SIGINT or SIGTERM stops render (exit 0).

The file holds a list of sinks; relative paths are relative to it, unknown keys are errors:

  sinks:
    - credential: orders-db
      path: /run/app/db.env                    # the directory must exist
      template: "PGUSER={{.username}}\nPGPASSWORD={{.password}}\n"   # or template_file: db.env.tmpl
      mode: "0640"                             # default "0600"
      owner: app                               # default render's user; a name or a uid
      group: app                               # default render's group; a name or a gid
      on_change: [systemctl, reload, app]      # an argument list; default none

A template is Go's text/template over the credential's data fields ({{.password}}, a static
credential's {{.value}}), {{.expires_at}} (RFC 3339) and {{.lease_id}}, with the functions json,
shellquote and base64; a field the credential lacks fails that sink.

With --once render writes every sink once and exits: 0, or 8 when any sink failed (each named on
stderr). Configuration errors exit 1 with file:line, usage errors 2.`
	renderExamples = `credbroker render --config /etc/credbroker/render.yaml
credbroker render --config render.yaml --once && exec app      # files first, then the app
credbroker render --config render.yaml --token-file /var/run/secrets/tokens/credbroker`
	renderHelp = "credbroker render — " + renderSummary + "\n\nUsage:\n  credbroker render " + renderArgs +
		"\n\n" + renderAbout + "\n\nExamples:\n" + renderExamples + "\n"
)

// exitSinkFailed is render --once's exit code when a sink could not be
// rendered.
const exitSinkFailed = 8

// renderConfig is credbroker render's configuration file.
type renderConfig struct {
	// Sinks are the files to render; at least one.
	Sinks []sinks.Config `yaml:"sinks"`
}

// render runs `credbroker render` until SIGINT or SIGTERM.
func (c *cli) render(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return c.renderContext(ctx, args)
}

// renderContext is render, stopped by ctx instead of signals.
func (c *cli) renderContext(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	configPath := fs.String("config", "", "the sinks file (required)")
	socket := fs.String("socket", "", "socket API path (default $"+client.SocketEnv+" or "+client.DefaultSocket+")")
	tokenFile := fs.String("token-file", "", "file holding a bearer token presented as evidence, re-read for every request")
	once := fs.Bool("once", false, fmt.Sprintf("render every sink once and exit: 0, or %d when any sink failed", exitSinkFailed))
	logFormat := fs.String("log-format", "json", "log format: json or text")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	pos, err := c.parse(fs, args)
	if err != nil {
		return exitUsage
	}
	switch {
	case len(pos) > 0:
		fmt.Fprintf(c.stderr, "credbroker render: unexpected argument %q; the sinks are in the --config file\n", pos[0])
		return exitUsage
	case *configPath == "":
		fmt.Fprintln(c.stderr, "credbroker render: --config is required: the file listing the sinks")
		return exitUsage
	case *logFormat != "json" && *logFormat != "text":
		fmt.Fprintf(c.stderr, "credbroker render: --log-format %q: use json or text\n", *logFormat)
		return exitUsage
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(c.stderr, "credbroker render: --log-level %q: use debug, info, warn or error\n", *logLevel)
		return exitUsage
	}
	cfgs, err := loadRenderConfig(*configPath)
	if err != nil {
		return c.renderProblems(err)
	}
	log := newLogger(c.stderr, LogConfig{Level: *logLevel, Format: *logFormat})
	var opts []client.Option
	if *tokenFile != "" {
		opts = append(opts, client.WithTokenFile(*tokenFile))
	}
	cl := client.New(*socket, opts...)
	defer cl.CloseIdleConnections()
	r, err := sinks.New(sinks.Options{Sinks: cfgs, Fetcher: cl, Logger: log, CommandOutput: c.stderr})
	if err != nil {
		return c.renderProblems(err)
	}
	if *once {
		if err := r.RenderOnce(ctx); err != nil {
			for _, e := range unjoin(err) {
				fmt.Fprintln(c.stderr, "credbroker render:", e)
			}
			return exitSinkFailed
		}
		return 0
	}
	log.Info("rendering files from credentials", "sinks", len(cfgs), "socket", cl.Socket())
	_ = r.Run(ctx) // nil: failures are logged and retried
	log.Info("stopped")
	return 0
}

// renderProblems prints a configuration's problems, one a line, and
// returns exit code 1.
func (c *cli) renderProblems(err error) int {
	for _, e := range unjoin(err) {
		fmt.Fprintln(c.stderr, e)
	}
	fmt.Fprintln(c.stderr, "credbroker render: cannot start: fix the problems above")
	return 1
}

// loadRenderConfig reads a sinks file: decoded strictly, relative paths
// resolved against the file, every sink validated. Each problem is a
// ConfigError at its file:line; all are reported at once.
func loadRenderConfig(path string) ([]sinks.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parseRenderConfig(path, b)
}

// parseRenderConfig is loadRenderConfig on the file's content b.
func parseRenderConfig(file string, b []byte) ([]sinks.Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, errors.Join(yamlErrors(file, err)...)
	}
	if len(root.Content) == 0 {
		return nil, ConfigError{file, "the file is empty: give a sinks: list (credbroker render --help shows one)"}
	}
	doc := root.Content[0]
	if errs := strictKeys(doc, reflect.TypeFor[renderConfig]()); len(errs) > 0 {
		return nil, errors.Join(yamlErrors(file, &yaml.TypeError{Errors: errs})...)
	}
	var rc renderConfig
	if err := doc.Decode(&rc); err != nil {
		return nil, errors.Join(yamlErrors(file, err)...)
	}
	pos := &Config{sources: map[string]string{}, Files: []string{file}}
	indexPositions(file, "", doc, pos.sources)
	if len(rc.Sinks) == 0 {
		return nil, ConfigError{pos.pos("sinks"), "no sinks: give a sinks: list (credbroker render --help shows one)"}
	}
	dir := filepath.Dir(file)
	var errs []error
	first := map[string]int{}
	for i := range rc.Sinks {
		s := &rc.Sinks[i]
		for _, p := range s.Paths() {
			*p = resolve(dir, *p)
		}
		key := fmt.Sprintf("sinks.%d", i)
		if err := s.Validate(); err != nil {
			for _, e := range unjoin(err) {
				k := key
				var fe *sinks.FieldError
				if errors.As(e, &fe) {
					k += "." + fe.Key
				}
				errs = append(errs, ConfigError{pos.pos(k), e.Error()})
			}
		}
		if j, dup := first[filepath.Clean(s.Path)]; dup && s.Path != "" {
			errs = append(errs, ConfigError{pos.pos(key + ".path"), fmt.Sprintf("%s is written by the sink at %s too: one sink per file", s.Path, pos.pos(fmt.Sprintf("sinks.%d", j)))})
		} else {
			first[filepath.Clean(s.Path)] = i
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return rc.Sinks, nil
}
