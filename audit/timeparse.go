package audit

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseTimeOrAgo parses a command-line time: RFC 3339 (2024-05-01T12:00:00Z,
// fractional seconds allowed), or a non-negative Go duration meaning that
// long before now ("90m", "1h30m"), or a whole number of days ("7d").
func ParseTimeOrAgo(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := parseAgo(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("audit: time %q: want RFC 3339 (2006-01-02T15:04:05Z) or a duration ago (90m, 24h, 7d)", s)
	}
	return now.Add(-d), nil
}

// parseAgo parses a non-negative Go duration or a number of days.
func parseAgo(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil {
			return 0, err
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %s", d)
	}
	return d, nil
}
