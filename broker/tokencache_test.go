package broker

import (
	"strconv"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest"
)

func TestTokenCache(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	id := attest.Identity{Method: "kubernetes", Subject: "system:serviceaccount:ns:sa"}
	c := newTokenCache(30 * time.Second)

	c.put("long-lived", id, now, now.Add(time.Hour))
	c.put("expiring", id, now, now.Add(10*time.Second))
	c.put("no-exp", id, now, time.Time{})
	for _, tt := range []struct {
		token string
		at    time.Duration
		want  bool
	}{
		{"long-lived", 29 * time.Second, true},
		{"long-lived", 30 * time.Second, false}, // the TTL bounds it
		{"expiring", 9 * time.Second, true},
		{"expiring", 10 * time.Second, false}, // the token's exp bounds it
		{"no-exp", 29 * time.Second, true},
		{"never-seen", 0, false},
	} {
		if got, ok := c.get(tt.token, now.Add(tt.at)); ok != tt.want || (ok && got.Subject != id.Subject) {
			t.Errorf("%s at +%v: %v %v, want %v", tt.token, tt.at, got, ok, tt.want)
		}
	}

	// Bounded: filling it past the limit never grows it beyond.
	for i := range maxCachedTokens + 10 {
		c.put("t"+strconv.Itoa(i), id, now, time.Time{})
	}
	if n := len(c.entries); n > maxCachedTokens {
		t.Fatalf("%d entries, limit %d", n, maxCachedTokens)
	}

	// Capped: however long the TTL asked for, MaxTokenCacheTTL bounds it.
	long := newTokenCache(time.Hour)
	long.put("x", id, now, time.Time{})
	if _, ok := long.get("x", now.Add(MaxTokenCacheTTL-time.Second)); !ok {
		t.Error("entry gone before MaxTokenCacheTTL")
	}
	if _, ok := long.get("x", now.Add(MaxTokenCacheTTL)); ok {
		t.Error("entry outlived MaxTokenCacheTTL")
	}

	// Off: a negative TTL caches nothing.
	off := newTokenCache(-1)
	off.put("x", id, now, time.Time{})
	if _, ok := off.get("x", now); ok {
		t.Fatal("a disabled cache returned an entry")
	}
}
