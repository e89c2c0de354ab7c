// Package sinks renders files from credentials, for apps that read their
// secrets from a file: an env file, a .pgpass, a JSON or YAML config. It
// is the client side of the broker, as Vault Agent's templates are Vault's:
// the render process asks the broker's socket API for each credential as
// itself (attested, authorised and audited like any caller) and writes the
// files; the app needs no change. The Fetcher is normally a
// *client.Client:
//
//	r, err := sinks.New(sinks.Options{Sinks: cfgs, Fetcher: client.New(socket), Logger: log})
//	if err != nil {
//		return err
//	}
//	return r.Run(ctx) // until ctx ends
//
// # Sinks
//
// A Config is one file: the credential it comes from, its path, a
// text/template, its mode (default 0600), owner and group (default the
// process's), and an optional on_change command:
//
//	sinks:
//	  - credential: orders-db
//	    path: /run/app/db.env
//	    template: "PGUSER={{.username}}\nPGPASSWORD={{.password}}\n"
//	    mode: "0640"
//	    group: app
//	    on_change: [systemctl, reload, app]
//
// Config.Validate checks a sink without I/O and reports every problem at
// once, each a *FieldError naming its key. New reads template files and
// looks up owner and group names.
//
// # Templates
//
// A template is Go's text/template with missingkey=error: a field the
// credential lacks fails the rendering (the file keeps its previous
// content) rather than writing "<no value>". Its data are
//
//   - each of the credential's data fields by name: {{.password}},
//     {{.username}}, a static credential's {{.value}};
//   - {{.expires_at}}, the credential's expiry (RFC 3339, UTC), and
//     {{.lease_id}}; a data field of the same name takes precedence.
//
// Besides text/template's functions (printf, js, urlquery, …) a template
// may call json (a JSON string, quoted and escaped, for JSON and YAML
// files: "password": {{json .password}}), shellquote (single-quoted for
// POSIX shells and env files they source) and base64 (standard
// encoding). Nothing else is added to the output: write the final newline
// in the template if the file needs one. Note that a template using
// expires_at or lease_id changes at every refresh, and so runs on_change
// each time.
//
// # Writing
//
// A file is written only when what the template renders differs from what
// the file holds (or its mode, owner or group differ), and always
// atomically: a temporary file ".NAME.RANDOM.credbroker-tmp" is created in
// the same directory with the final mode (never wider, whatever the
// umask), given its owner and group before any byte is written, written
// and fsynced, renamed over the path, and the directory fsynced. A reader
// sees the old file or the new one, never a partial one. On any failure
// the temporary file is removed and the old file stays; temporary files a
// killed renderer left behind are removed the first time the sink is
// rendered. One renderer per file.
//
// # Refresh
//
// Renderer.Run fetches each credential once for all its sinks and renders
// them, then again at half the credential's remaining lifetime (at least
// MinRefresh apart; each fetch bounded by Options.FetchTimeout). A failed
// fetch or write is logged — with the broker's reason, never a secret —
// and retried after BackoffMin, doubling to BackoffMax, each wait
// jittered; the files keep their previous content meanwhile, even past the
// old credential's expiry. RenderOnce renders each sink once and returns
// the failures as *SinkError values.
//
// # on_change
//
// After a refresh has written its files, the on_change command of each
// file whose content changed runs once — not when the rendered bytes are
// equal to the file's, nor after a rewrite that only restored the mode or
// owner. It is an argument list run without a shell, with no input; its
// output goes to Options.CommandOutput. Its environment is the render
// process's own plus CREDBROKER_SINK_PATH (the file) and
// CREDBROKER_SINK_CREDENTIAL (the credential's name): never a value of the
// credential, which the command reads from the file. It is killed after
// Options.CommandTimeout (default one minute). A failed command is logged
// and reported, not retried: the next change runs it again.
//
// # Secrets
//
// A credential's values reach the configured file and nothing else:
// client.Credential never prints them, log lines and errors name fields and
// paths only (a template error is scrubbed of the values), and no
// temporary file is left behind.
package sinks
