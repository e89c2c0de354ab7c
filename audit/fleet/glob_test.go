package fleet

import (
	"context"
	"database/sql"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	_ "modernc.org/sqlite" // the reference: SQLite's own GLOB, as the file reader runs it
)

// globPatterns and globSubjects are the table both the unit test and the
// fuzz target's seeds draw from: every rule of SQLite's GLOB, and
// characters that are special in regular expressions.
var globPatterns = []string{
	"", "*", "?", "**", "*?", "?*", "a", "a*", "*a", "a?c", "a*c", "[abc]", "[^abc]", "[a-c]", "[c-a]",
	"[]]", "[]a]", "[^]]", "[]-a]", "[a-]", "[-a]", "[a-c-e]", "[!-/]", "[\\]", "[\\\\]", "[[]", "[^^]",
	"[", "a[", "a[b", "*[", "[a", "[]", "[^]", "a]", "]", "^", "$", ".", ".*", "a.c", "a+", "(a)", "a|b",
	"{a}", "a\\*", "\\", "unix:uid:*", "unix:uid:1000", "unix:uid:10?0", "unix:uid:1[0-9][0-9]0",
	"system:serviceaccount:*:api", "spiffe://example.org/ns/*/sa/[a-z]*", "*[0-9]", "*[[]*", "a*b*c",
	"é", "[é-ü]", "?é", "*\u00e9*", "[^é]", "\uFFFD", "\uFFFE", "\uFFFF", "[\uFFFE]", "[^\uFFFF]", "a\uFFFE*",
	"[a-\uFFFF]", "\n", "?\n", "*\n*", "[\n]", "a\tb", "\x7f*", "日本*", "[日-本]",
}

var globSubjects = []string{
	"", "a", "b", "c", "d", "ab", "abc", "aXc", "a.c", "a+", "]", "-", "^", "[", "\\", "$", "!", "/", "*",
	"?", "aa", "aaa", "unix:uid:1000", "unix:uid:1050", "unix:uid:10", "system:serviceaccount:ns:api",
	"spiffe://example.org/ns/shop/sa/web", "é", "ü", "ê", "aé", "\uFFFD", "\uFFFE", "\uFFFF", "a\uFFFD",
	"a\uFFFF", "\n", "a\nb", "a\tb", "\x7f", "日本語", "本", "a\x00b", "unix:uid:\x00x", "\x00", "(a)",
	"a|b", "{a}", "a*", "a*c",
}

// sqliteMatch is what the SQLite reader selects for workload glob p: an
// exact subject when p has no wildcard, else the subjects in p's prefix
// range that SQLite's GLOB matches.
func sqliteMatch(t testing.TB, db *sql.DB, p, s string) bool {
	if strings.IndexAny(p, "*?[") < 0 {
		return s == p
	}
	var ok bool
	if err := db.QueryRow("SELECT ? GLOB ?", s, p).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// fleetMatch is what the fleet store selects for p, its regular expression
// evaluated by Go's regexp (RE2 syntax, as CockroachDB does): the subject
// column holds what GLOB sees of a subject (see escape).
func fleetMatch(t testing.TB, m workloadMatch, s string) bool {
	if m.never {
		return false
	}
	if m.regex == "" {
		return s == m.exact
	}
	view, _, _ := strings.Cut(s, "\x00")
	if m.prefix != "" && (view < m.prefix || m.hasEnd && view >= m.end) {
		return false
	}
	re, err := regexp.Compile(m.regex)
	if err != nil {
		t.Fatalf("regexp %q: %v", m.regex, err)
	}
	return re.MatchString(view)
}

// openSQLite opens an in-memory SQLite database for GLOB.
func openSQLite(t testing.TB) *sql.DB {
	db, err := sql.Open("sqlite", ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestGlobTranslation checks every pattern against every subject three
// ways: SQLite's GLOB (the reference), the translation under Go's regexp,
// and the translation as PostgreSQL runs it, prefix range included, on a
// column of collation "C" as the schema declares subject.
func TestGlobTranslation(t *testing.T) {
	lite := openSQLite(t)
	db := newFleetDB(t)
	conn := db.srv.Conn(t)
	ctx := context.Background()
	for _, p := range globPatterns {
		m, err := translateGlob(p)
		if err != nil {
			t.Fatalf("%q: %v", p, err)
		}
		for _, s := range globSubjects {
			want := sqliteMatch(t, lite, p, s)
			if got := fleetMatch(t, m, s); got != want {
				t.Errorf("glob %q (%v), subject %q: Go regexp says %v, SQLite %v", p, m, s, got, want)
			}
			view, _, _ := strings.Cut(s, "\x00")
			var got bool
			switch {
			case m.never:
			case m.regex == "":
				got = s == m.exact // PostgreSQL text cannot hold a NUL: see TestForwardRoundTrip
			default:
				err = conn.QueryRow(ctx, `SELECT ($1::text COLLATE "C") >= $2 AND (NOT $4 OR ($1::text COLLATE "C") < $3) AND ($1::text COLLATE "C") ~ $5`,
					view, m.prefix, m.end, m.hasEnd, m.regex).Scan(&got)
				if err != nil {
					t.Fatalf("glob %q (%v), subject %q: PostgreSQL: %v", p, m, s, err)
				}
			}
			if got != want {
				t.Errorf("glob %q (%v), subject %q: PostgreSQL says %v, SQLite %v", p, m, s, got, want)
			}
		}
	}
	if _, err := translateGlob("a\x00*"); err == nil {
		t.Error("a glob with a NUL was accepted")
	}
	if _, err := translateGlob("a\xff*"); err == nil {
		t.Error("a glob of invalid UTF-8 was accepted")
	}
}

// TestPrefixEnd checks the upper bound of prefix ranges.
func TestPrefixEnd(t *testing.T) {
	for _, c := range []struct {
		prefix, end string
		ok          bool
	}{
		{"", "", false},
		{"a", "b", true},
		{"unix:uid:", "unix:uid;", true},
		{"a\u007f", "a\u0080", true},
		{"a\ud7ff", "a\ue000", true},
		{"a\U0010FFFF", "b", true},
		{"\U0010FFFF", "", false},
		{"é", "ê", true},
	} {
		end, ok := prefixEnd(c.prefix)
		if end != c.end || ok != c.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", c.prefix, end, ok, c.end, c.ok)
		}
		if ok && !utf8.ValidString(end) {
			t.Errorf("prefixEnd(%q) = %q: not UTF-8", c.prefix, end)
		}
	}
}

// FuzzGlob compares the translation, under Go's regexp, with SQLite's GLOB
// for any pattern PostgreSQL can carry and any subject of valid UTF-8
// (NUL included).
func FuzzGlob(f *testing.F) {
	for i, p := range globPatterns {
		f.Add(p, globSubjects[i%len(globSubjects)])
		f.Add(p, globSubjects[(i*7+3)%len(globSubjects)])
	}
	lite := openSQLite(f)
	f.Fuzz(func(t *testing.T, p, s string) {
		if len(p) > 64 || len(s) > 64 || strings.Count(p, "*") > 4 {
			return // SQLite's GLOB backtracks: many stars over long subjects take exponential time
		}
		m, err := translateGlob(p)
		if !storable(p) && strings.ContainsAny(p, "*?[") {
			if err == nil {
				t.Fatalf("glob %q accepted", p)
			}
			return
		}
		if err != nil {
			t.Fatalf("glob %q: %v", p, err)
		}
		if !utf8.ValidString(s) && m.regex != "" {
			return // matched by globs as its base64 in the store: see escape
		}
		if got, want := fleetMatch(t, m, s), sqliteMatch(t, lite, p, s); got != want {
			t.Fatalf("glob %q (%v), subject %q: store %v, SQLite %v", p, m, s, got, want)
		}
	})
}
