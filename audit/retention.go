package audit

import (
	"fmt"
	"strings"
	"time"
)

// DefaultMinRetention is the retention floor of a log whose broker has not
// stored one (Config.MinRetention): Prune keeps at least the last day.
const DefaultMinRetention = 24 * time.Hour

// metaMinRetention is the meta key of the retention floor, a Go duration.
const metaMinRetention = "min_retention"

// RetentionError is Prune's refusal of a cut-off within the retention
// floor: rows newer than Floor before the prune started must be kept.
type RetentionError struct {
	Before time.Time     // the cut-off asked for
	Floor  time.Duration // the min retention
	Limit  time.Time     // the latest cut-off allowed: when the prune started, minus Floor
	Stored bool          // Floor was stored in the database by the broker, not DefaultMinRetention
}

// Error names the cut-off, the floor and where it came from, and how to
// override it.
func (e *RetentionError) Error() string {
	source := "the default, as no broker has stored its audit.min_retention in this database"
	if e.Stored {
		source = "the audit.min_retention the broker stored in the database"
	}
	return fmt.Sprintf("cut-off %s is within the retention floor of %s (%s): the latest cut-off allowed is %s; "+
		"prune with --force to go below it (recorded in the signed prune anchor)",
		e.Before.UTC().Format(timeLayout), formatDuration(e.Floor), source, e.Limit.UTC().Format(timeLayout))
}

// storeMinRetention stores d as the log's retention floor, which Prune
// honours. It writes only when the stored value differs.
func storeMinRetention(c *conn, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("min retention %s: must be positive", d)
	}
	if old, ok, err := readMinRetention(c); err == nil && ok && old == d {
		return nil
	}
	return setMeta(c, metaMinRetention, formatDuration(d))
}

// readMinRetention returns the stored retention floor; ok is false when
// none is stored.
func readMinRetention(c *conn) (d time.Duration, ok bool, err error) {
	s, ok, err := getMeta(c, metaMinRetention)
	if err != nil || !ok {
		return 0, false, err
	}
	d, err = time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, false, fmt.Errorf("meta %s %q is not a positive duration; the broker rewrites it when it next opens the log", metaMinRetention, s)
	}
	return d, true, nil
}

// checkRetention refuses a cut-off before later than now minus the
// retention floor, unless force is set; forced reports that force was
// needed.
func checkRetention(c *conn, before, now time.Time, force bool) (forced bool, err error) {
	floor, stored, err := readMinRetention(c)
	if err != nil {
		return false, err
	}
	if !stored {
		floor = DefaultMinRetention
	}
	limit := now.Add(-floor)
	if !before.After(limit) {
		return false, nil
	}
	if !force {
		return false, &RetentionError{Before: before, Floor: floor, Limit: limit, Stored: stored}
	}
	return true, nil
}

// formatDuration formats d without zero minutes and seconds: 24h, 1h30m.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
