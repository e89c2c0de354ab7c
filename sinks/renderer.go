package sinks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"text/template"
	"time"

	"github.com/credbroker/credbroker/client"
)

// Timing of refreshes and retries.
const (
	// MinRefresh is the shortest wait between two fetches of a credential
	// that succeeded, however short its life.
	MinRefresh = time.Second
	// DefaultRefresh is the wait after a credential without an expiry.
	DefaultRefresh = 5 * time.Minute
	// BackoffMin is the first wait after a failure; it doubles with each
	// failure in a row, up to BackoffMax, each wait jittered down to as
	// little as half.
	BackoffMin = time.Second
	// BackoffMax caps the wait after failures.
	BackoffMax = time.Minute
	// DefaultFetchTimeout bounds a fetch when Options.FetchTimeout is zero.
	DefaultFetchTimeout = 30 * time.Second
)

// Log attribute keys.
const (
	logPath       = "path"
	logCredential = "credential"
	logError      = "error"
	logRetryIn    = "retry_in"
	logNextIn     = "next_refresh_in"
	logExpiresAt  = "expires_at"
	logDecision   = "decision_id"
	logCommand    = "command"
	logDuration   = "duration"
	logPaths      = "paths"
)

// Options configures a Renderer.
type Options struct {
	// Sinks are the files to render. Required; paths must differ.
	Sinks []Config
	// Fetcher obtains the credentials. Required.
	Fetcher Fetcher
	// Logger receives one line per file written, failure and on_change
	// run, never a secret; default: discarded.
	Logger *slog.Logger
	// CommandOutput receives on_change commands' stdout and stderr;
	// default: discarded.
	CommandOutput io.Writer
	// FetchTimeout bounds each fetch; default DefaultFetchTimeout.
	FetchTimeout time.Duration
	// CommandTimeout bounds each on_change run; default
	// DefaultCommandTimeout.
	CommandTimeout time.Duration
	// Hooks replace the clock and the jitter, for tests; default the real
	// ones.
	Hooks Hooks
}

// Hooks are a Renderer's time and randomness.
type Hooks struct {
	// Now returns the current time; default time.Now.
	Now func() time.Time
	// After waits as time.After does; default time.After.
	After func(time.Duration) <-chan time.Time
	// Jitter returns a wait between d/2 and d; default uniformly random.
	Jitter func(d time.Duration) time.Duration
}

// SinkError is the failure of one sink in one refresh. Its message never
// holds a secret.
type SinkError struct {
	Path       string
	Credential string
	Err        error
}

func (e *SinkError) Error() string {
	return fmt.Sprintf("sinks: %s (credential %s): %v", e.Path, e.Credential, e.Err)
}

// Unwrap returns the cause.
func (e *SinkError) Unwrap() error { return e.Err }

// Renderer keeps a set of files rendered from credentials: Run renders
// each and re-renders it ahead of its credential's expiry; RenderOnce
// renders each once. Sinks of one credential share each fetch. A Renderer
// is used by one goroutine at a time: Run or RenderOnce, not both at once.
type Renderer struct {
	opts   Options
	log    *slog.Logger
	groups []*group
}

// group is the sinks of one credential.
type group struct {
	credential string
	sinks      []*sink
	failures   int // in a row
}

// sink is one Config made ready: template parsed, ids looked up.
type sink struct {
	cfg     Config
	tmpl    *template.Template
	file    file
	sum     [sha256.Size]byte // of the content last written or found
	known   bool              // sum is set
	cleaned bool              // stale temporary files removed
}

// New validates opts, reads the template files and looks up owners and
// groups; it reports every problem at once.
func New(opts Options) (*Renderer, error) {
	var errs []error
	if opts.Fetcher == nil {
		errs = append(errs, errors.New("sinks: a Fetcher is required"))
	}
	if len(opts.Sinks) == 0 {
		errs = append(errs, errors.New("sinks: no sinks to render"))
	}
	opts.Hooks = opts.Hooks.withDefaults()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CommandOutput == nil {
		opts.CommandOutput = io.Discard
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = DefaultFetchTimeout
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = DefaultCommandTimeout
	}
	r := &Renderer{opts: opts, log: opts.Logger}
	byCredential := map[string]*group{}
	paths := map[string]bool{}
	for i, c := range opts.Sinks {
		if p := filepath.Clean(c.Path); c.Path != "" && paths[p] {
			errs = append(errs, fmt.Errorf("sink %d: path %s is rendered by an earlier sink too", i, p))
			continue
		}
		paths[filepath.Clean(c.Path)] = true
		s, err := newSink(c)
		if err != nil {
			for _, e := range unjoin(err) {
				errs = append(errs, fmt.Errorf("sink %d (%s): %w", i, c.Path, e))
			}
			continue
		}
		g := byCredential[s.cfg.Credential]
		if g == nil {
			g = &group{credential: s.cfg.Credential}
			byCredential[g.credential] = g
			r.groups = append(r.groups, g)
		}
		g.sinks = append(g.sinks, s)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

func (h Hooks) withDefaults() Hooks {
	if h.Now == nil {
		h.Now = time.Now
	}
	if h.After == nil {
		h.After = time.After
	}
	if h.Jitter == nil {
		h.Jitter = func(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }
	}
	return h
}

// newSink validates c, parses its template and looks up its ids.
func newSink(c Config) (*sink, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	s := &sink{cfg: c, file: file{path: filepath.Clean(c.Path), uid: -1, gid: -1}}
	s.cfg.Path = s.file.path
	s.file.mode, _ = c.mode()
	var errs []error
	var err error
	if c.TemplateFile == "" {
		s.tmpl, _ = parseTemplate("template", c.Template) // checked by Validate
	} else if s.tmpl, err = loadTemplate(c.TemplateFile); err != nil {
		errs = append(errs, &FieldError{Key: "template_file", Message: err.Error()})
	}
	if s.file.uid, err = lookupID(c.Owner, "owner"); err != nil {
		errs = append(errs, err)
	}
	if s.file.gid, err = lookupID(c.Group, "group"); err != nil {
		errs = append(errs, err)
	}
	return s, errors.Join(errs...)
}

// lookupID turns an owner or group into a numeric id; -1 when unset. key
// is "owner" or "group".
func lookupID(s, key string) (int, error) {
	if s == "" {
		return -1, nil
	}
	if id, err := strconv.ParseUint(s, 10, 32); err == nil {
		return int(id), nil
	}
	var id string
	var err error
	noun := "user"
	if key == "group" {
		noun = "group"
		var g *user.Group
		if g, err = user.LookupGroup(s); err == nil {
			id = g.Gid
		}
	} else {
		var u *user.User
		if u, err = user.Lookup(s); err == nil {
			id = u.Uid
		}
	}
	n, convErr := strconv.Atoi(id)
	if err != nil || convErr != nil {
		return 0, &FieldError{Key: key, Message: fmt.Sprintf("%q: no such %s (names come from /etc/passwd and /etc/group; a numeric id needs none)", s, noun)}
	}
	return n, nil
}

// loadTemplate reads and parses a template file of at most
// MaxTemplateBytes.
func loadTemplate(path string) (*template.Template, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxTemplateBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	return parseTemplate(filepath.Base(path), string(b))
}

// Run renders every sink, then re-renders each credential's sinks at half
// its remaining lifetime, and after a failure with backoff, until ctx ends;
// it returns nil then. A failure leaves the files as they were and is
// logged; Run carries on.
func (r *Renderer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, g := range r.groups {
		wg.Go(func() { r.keep(ctx, g) })
	}
	wg.Wait()
	return nil
}

// keep refreshes g until ctx ends.
func (r *Renderer) keep(ctx context.Context, g *group) {
	for {
		wait, _ := r.refresh(ctx, g, true)
		if ctx.Err() != nil {
			return
		}
		r.log.Debug("next refresh scheduled", logCredential, g.credential, logNextIn, wait.String())
		select {
		case <-ctx.Done():
			return
		case <-r.opts.Hooks.After(wait):
		}
	}
}

// RenderOnce renders every sink once and returns the failures, each a
// *SinkError, joined.
func (r *Renderer) RenderOnce(ctx context.Context) error {
	var errs []error
	for _, g := range r.groups {
		_, err := r.refresh(ctx, g, false)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// refresh fetches g's credential once, renders each of its sinks, then runs
// the on_change of those whose content changed. It returns the wait before
// the next refresh and the failures, which it logs (with that wait when
// retrying).
func (r *Renderer) refresh(ctx context.Context, g *group, retrying bool) (time.Duration, error) {
	fctx, cancel := context.WithTimeout(ctx, r.opts.FetchTimeout)
	c, err := r.opts.Fetcher.Get(fctx, g.credential)
	cancel()
	if err == nil && c == nil {
		err = errors.New("the fetcher returned no credential")
	}
	if err != nil {
		g.failures++
		wait := r.backoff(g.failures)
		if ctx.Err() == nil {
			r.log.Warn("fetching the credential failed; its files are left as they were",
				append(retryAttr(retrying, wait), logCredential, g.credential, logError, err.Error(), logPaths, g.paths())...)
		}
		var errs []error
		for _, s := range g.sinks {
			errs = append(errs, &SinkError{Path: s.cfg.Path, Credential: g.credential, Err: fmt.Errorf("fetching: %w", err)})
		}
		return wait, errors.Join(errs...)
	}
	var errs []error
	var changed []*sink
	for _, s := range g.sinks {
		ch, err := r.render(s, c)
		if err != nil {
			errs = append(errs, &SinkError{Path: s.cfg.Path, Credential: g.credential, Err: err})
			continue
		}
		if ch {
			changed = append(changed, s)
		}
	}
	for _, s := range changed {
		if err := r.onChange(ctx, s); err != nil {
			errs = append(errs, &SinkError{Path: s.cfg.Path, Credential: g.credential, Err: err})
		}
	}
	wait := r.nextRefresh(c.ExpiresAt)
	if len(errs) == 0 {
		g.failures = 0
		return wait, nil
	}
	g.failures++
	wait = min(wait, r.backoff(g.failures))
	if ctx.Err() != nil {
		return wait, errors.Join(errs...) // stopping: a command cut short is no failure to log
	}
	for _, err := range errs {
		se := err.(*SinkError)
		r.log.Error("file not rendered; it is left as it was",
			append(retryAttr(retrying, wait), logPath, se.Path, logCredential, g.credential, logError, se.Err.Error())...)
	}
	return wait, errors.Join(errs...)
}

// render writes s from c if its content or metadata differ from what is
// there, and reports whether the content changed.
func (r *Renderer) render(s *sink, c *client.Credential) (bool, error) {
	content, err := execute(s.tmpl, c)
	if err != nil {
		return false, fmt.Errorf("template: %w", err)
	}
	if !s.cleaned {
		if err := s.file.removeStale(); err != nil {
			r.log.Warn("could not remove temporary files a stopped renderer left", logPath, s.cfg.Path, logError, err.Error())
		}
		s.cleaned = true
	}
	sum := sha256.Sum256(content)
	cur := s.file.read()
	if cur.same(content) {
		s.sum, s.known = sum, true
		r.log.Debug("file unchanged", logPath, s.cfg.Path, logCredential, c.Name, logDecision, c.DecisionID)
		return false, nil
	}
	var changed bool
	switch {
	case cur.content != nil:
		changed = !bytes.Equal(cur.content, content)
	case !cur.exists:
		changed = true
	default: // unreadable: compare with what this renderer wrote
		changed = !s.known || s.sum != sum
	}
	if err := s.file.write(content); err != nil {
		return false, err
	}
	s.sum, s.known = sum, true
	msg := "file rendered"
	if !changed {
		msg = "file rewritten with its configured mode, owner and group; content unchanged"
	}
	r.log.Info(msg, logPath, s.cfg.Path, logCredential, c.Name, logExpiresAt, c.ExpiresAt, logDecision, c.DecisionID)
	return changed, nil
}

// onChange runs s's on_change, if it has one.
func (r *Renderer) onChange(ctx context.Context, s *sink) error {
	if len(s.cfg.OnChange) == 0 {
		return nil
	}
	start := r.opts.Hooks.Now()
	err := runCommand(ctx, &s.cfg, r.opts.CommandOutput, r.opts.CommandTimeout)
	took := r.opts.Hooks.Now().Sub(start)
	if err != nil {
		return err
	}
	r.log.Info("on_change ran", logPath, s.cfg.Path, logCommand, s.cfg.OnChange[0], logDuration, took.Round(time.Millisecond).String())
	return nil
}

// retryAttr is the log attribute of the wait before a retry, if there is
// one.
func retryAttr(retrying bool, wait time.Duration) []any {
	if !retrying {
		return nil
	}
	return []any{logRetryIn, wait.Round(time.Millisecond).String()}
}

// nextRefresh is the wait until half the remaining life of a credential
// expiring at exp, at least MinRefresh.
func (r *Renderer) nextRefresh(exp time.Time) time.Duration {
	if exp.IsZero() {
		return DefaultRefresh
	}
	return max(exp.Sub(r.opts.Hooks.Now())/2, MinRefresh)
}

// backoff is the wait after the n-th failure in a row.
func (r *Renderer) backoff(n int) time.Duration {
	d := BackoffMax
	if n <= 6 {
		d = min(BackoffMin<<(n-1), BackoffMax)
	}
	return r.opts.Hooks.Jitter(d)
}

// unjoin splits an errors.Join into its errors.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func (g *group) paths() []string {
	ps := make([]string, len(g.sinks))
	for i, s := range g.sinks {
		ps[i] = s.cfg.Path
	}
	return ps
}
