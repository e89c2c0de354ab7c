package fleet

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
)

// maxDSNFile bounds how much of a DSN file is read.
const maxDSNFile = 64 << 10

// ReadDSN reads a connection string from a file: a postgres:// URL or
// key=value pairs, white space around it ignored. The file holds a secret
// (the password, unless it comes from PGPASSWORD or a .pgpass file): keep
// it mode 0600. Errors never quote its content.
func ReadDSN(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("audit/fleet: DSN file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxDSNFile+1))
	if err != nil {
		return "", fmt.Errorf("audit/fleet: DSN file %s: %w", path, err)
	}
	if len(data) > maxDSNFile {
		return "", fmt.Errorf("audit/fleet: DSN file %s: larger than %d bytes", path, maxDSNFile)
	}
	dsn := strings.TrimSpace(string(data))
	if dsn == "" {
		return "", fmt.Errorf("audit/fleet: DSN file %s is empty: write a postgres:// URL or key=value connection string into it", path)
	}
	return dsn, nil
}

// parseDSN parses a connection string for pgx, refusing one that cannot be
// parsed with a message that does not quote it.
func parseDSN(dsn string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, errors.New("audit/fleet: the DSN cannot be parsed: want a postgres:// URL or key=value pairs (host=… user=… dbname=…)")
	}
	return cfg, nil
}

// scrubber removes a DSN's secrets from error messages: the password, its
// URL-escaped forms and the DSN itself. pgx does not put passwords in its
// errors, but a message that reaches a log or a terminal must not depend on
// that.
type scrubber struct {
	secrets []string
}

// newScrubber returns the scrubber of dsn.
func newScrubber(dsn string) scrubber {
	s := scrubber{secrets: []string{dsn}}
	var pws []string
	if cfg, err := pgx.ParseConfig(dsn); err == nil && cfg.Password != "" {
		pws = append(pws, cfg.Password)
	}
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			pws = append(pws, pw)
		}
	}
	for _, pw := range pws {
		s.secrets = append(s.secrets, pw, url.QueryEscape(pw), url.PathEscape(pw), url.UserPassword("", pw).String())
	}
	return s
}

// err returns err unchanged when its message holds no secret, else an
// error with the same message, secrets replaced by "xxxxx".
func (s scrubber) err(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	scrubbed := s.text(msg)
	if scrubbed == msg {
		return err
	}
	return errors.New(scrubbed)
}

// text returns msg with the secrets replaced.
func (s scrubber) text(msg string) string {
	for _, sec := range s.secrets {
		if sec != "" {
			msg = strings.ReplaceAll(msg, sec, "xxxxx")
		}
	}
	return msg
}
