package policies

import (
	"errors"
	"path"
	"slices"
	"strings"
	"testing"
)

// globCases are globs of workload selectors and credential lists and the
// names they match: `*`, `?` and classes stay within one '/'-separated
// segment, and `**` crosses segments.
var globCases = []struct {
	glob  string
	match []string
	miss  []string
}{
	{"spiffe://td/ns/payments/*",
		[]string{"spiffe://td/ns/payments/api", "spiffe://td/ns/payments/"},
		[]string{"spiffe://td/ns/payments/sa/api", "spiffe://td/ns/payments", "spiffe://td/ns/orders/api"}},
	{"spiffe://td/ns/payments/**",
		[]string{"spiffe://td/ns/payments/api", "spiffe://td/ns/payments/sa/api", "spiffe://td/ns/payments/a/b/c/d"},
		[]string{"spiffe://td/ns/payments", "spiffe://td/ns/paymentsx/api", "spiffe://td/ns/orders/api"}},
	{"spiffe://td/**/sa/api",
		[]string{"spiffe://td/sa/api", "spiffe://td/ns/payments/sa/api", "spiffe://td/x/y/z/sa/api"},
		[]string{"spiffe://td/ns/payments/sa/web", "spiffe://other/ns/sa/api", "spiffe://td/ns/xsa/api"}},
	{"spiffe://td/ns/*/sa/**",
		[]string{"spiffe://td/ns/payments/sa/api", "spiffe://td/ns/orders/sa/a/b"},
		[]string{"spiffe://td/ns/a/b/sa/api", "spiffe://td/ns/payments/sa"}},
	{"/usr/**",
		[]string{"/usr/bin/payments", "/usr/local/bin/payments", "/usr/x"},
		[]string{"/usr", "/opt/usr/bin", "/usrx/bin"}},
	{"/usr/*",
		[]string{"/usr/payments"},
		[]string{"/usr/bin/payments", "/usr"}},
	{"/opt/*/bin/*",
		[]string{"/opt/team/bin/api"},
		[]string{"/opt/team/x/bin/api", "/opt/team/bin/x/api"}},
	{"**/payments",
		[]string{"payments", "/usr/bin/payments", "a/b/payments"},
		[]string{"/usr/bin/payments-x", "payments/x"}},
	{"**",
		[]string{"", "a", "a/b", "/", "spiffe://td/x"},
		nil},
	{"a/**/**/b",
		[]string{"a/b", "a/x/b", "a/x/y/b"},
		[]string{"a", "b", "a/x/c"}},
	{"arn:aws:iam::*:role/payments-*",
		[]string{"arn:aws:iam::123456789012:role/payments-api"},
		[]string{"arn:aws:iam::123456789012:role/payments/api", "arn:aws:iam::123456789012:role/orders-api"}},
	{"arn:aws:iam::123456789012:role/**",
		[]string{"arn:aws:iam::123456789012:role/payments-api", "arn:aws:iam::123456789012:role/team/payments-api"},
		[]string{"arn:aws:iam::123456789012:user/x"}},
	// classes and '?' never match '/' (path.Match alone lets [^a] match it)
	{"a[^x]b", []string{"acb"}, []string{"a/b", "axb"}},
	{"a?b", []string{"acb"}, []string{"a/b"}},
	{"a/[^x]*/b", []string{"a/yz/b"}, []string{"a/x/b", "a/y/z/b"}},
	{`a/\*`, []string{"a/*"}, []string{"a/x"}},
	{`a/\**`, []string{"a/*", "a/*x"}, []string{"a/x", "a/*/x"}},
}

func TestGlobs(t *testing.T) {
	for _, tc := range globCases {
		pat, err := newPattern(tc.glob)
		if err != nil {
			t.Errorf("%q: %v", tc.glob, err)
			continue
		}
		for _, want := range []bool{true, false} {
			names := tc.match
			if !want {
				names = tc.miss
			}
			for _, n := range names {
				if got := pat.match(n); got != want {
					t.Errorf("%q on %q: %v, want %v", tc.glob, n, got, want)
				}
				if got := referenceMatch(tc.glob, n); got != want {
					t.Errorf("reference: %q on %q: %v, want %v", tc.glob, n, got, want)
				}
			}
		}
	}
}

// TestGlobsInSelectors runs `**` through a compiled policy: an exe glob, a
// SPIFFE ID glob and a credential glob.
func TestGlobsInSelectors(t *testing.T) {
	s := mustCompile(t, `
		policies:
		  - name: below-payments
		    effect: allow
		    workloads:
		      - spiffe: {id: "spiffe://prod.example.org/ns/payments/**"}
		      - unix: {exe: "/usr/**", exe_sha256: 9f2c7d1e5b3a4c6d8e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d}
		    credentials: ["team/**"]
	`)
	for _, tc := range []struct {
		in   Input
		want Effect
	}{
		{input(idSPIFFE, "team/db"), Allow},
		{input(idSPIFFE, "team/a/db"), Allow},
		{input(idSPIFFE, "team"), Deny},
		{input(idUnix, "team/db"), Allow},
		{input(unixID(1001, 1001, "/opt/payments"), "team/db"), Deny},
	} {
		if d := s.Evaluate(tc.in); d.Effect != tc.want {
			t.Errorf("%s reading %q: %s, want %s (%s)", tc.in.Identity.Subject, tc.in.Request.Credential, d.Effect, tc.want, d.Reason)
		}
	}
}

func TestGlobProblems(t *testing.T) {
	for glob, want := range map[string]string{
		"a**":       `"a**" is not a whole segment: ** must stand between slashes (or at an end); * matches within one segment`,
		"/usr/**x":  `"**x" is not a whole segment`,
		"a/***":     `"***" is not a whole segment`,
		`a\/b`:      `'/' separates segments and cannot be escaped or stand in a [class]`,
		"a[/]b":     `'/' separates segments and cannot be escaped or stand in a [class]`,
		"a[^/]b":    `'/' separates segments and cannot be escaped or stand in a [class]`,
		"[oops":     path.ErrBadPattern.Error(),
		`trailing\`: path.ErrBadPattern.Error(),
	} {
		_, err := newPattern(glob)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", glob, err, want)
		}
	}
	// Through Compile, with the position of the value.
	_, err := Compile([]File{{Name: "g.yaml", Data: []byte(dedent(`
		policies:
		  - name: p
		    effect: allow
		    workloads:
		      - spiffe: {id: "spiffe://td/ns/payments**"}
		    credentials: ["orders-**"]
	`))}})
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("Compile: %v", err)
	}
	want := []string{
		`g.yaml:5: bad glob "spiffe://td/ns/payments**" in id: "payments**" is not a whole segment: ** must stand between slashes (or at an end); * matches within one segment`,
		`g.yaml:6: bad credential glob "orders-**": "orders-**" is not a whole segment: ** must stand between slashes (or at an end); * matches within one segment`,
	}
	if got := strs(ps); !slices.Equal(got, want) {
		t.Errorf("problems:\n got %q\nwant %q", got, want)
	}
}

// TestGlobShortcuts checks that the shapes matched without splitting into
// segments ("prefix*", "*suffix", "prefix/**") match what the segment
// matcher does.
func TestGlobShortcuts(t *testing.T) {
	names := []string{"", "a", "a/", "a/b", "a/b/c", "ab", "ab/c", "b/a", "x/ab", "/", "//", "a//b"}
	for _, glob := range []string{"a*", "*a", "a/*", "*/a", "a/**", "/**", "a/b/**", "*", "**"} {
		pat, err := newPattern(glob)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if got, want := pat.match(n), referenceMatch(glob, n); got != want {
				t.Errorf("%q (kind %d) on %q: %v, segment by segment %v", glob, pat.kind, n, got, want)
			}
		}
	}
}

// referenceMatch is the glob rule spelt out: split both at '/', match
// segment by segment with path.Match, `**` takes any number of segments,
// at least one at the end of the pattern.
func referenceMatch(glob, name string) bool {
	var match func(pat, segs []string) bool
	match = func(pat, segs []string) bool {
		switch {
		case len(pat) == 0:
			return len(segs) == 0
		case pat[0] == "**" && len(pat) == 1:
			return len(segs) > 0
		case pat[0] == "**":
			for i := 0; i <= len(segs); i++ {
				if match(pat[1:], segs[i:]) {
					return true
				}
			}
			return false
		case len(segs) == 0:
			return false
		}
		ok, _ := path.Match(pat[0], segs[0])
		return ok && match(pat[1:], segs[1:])
	}
	return match(strings.Split(glob, "/"), strings.Split(name, "/"))
}

// FuzzGlob checks that a glob accepted by newPattern matches what the
// rule spelt out in referenceMatch says, through every shortcut.
func FuzzGlob(f *testing.F) {
	for _, tc := range globCases {
		for _, n := range append(slices.Clone(tc.match), tc.miss...) {
			f.Add(tc.glob, n)
		}
	}
	f.Add("a/**/b/**/c", "a/x/b/y/z/c")
	f.Add("**/**/**", "a")
	f.Add(`[\/]`, "/")
	f.Fuzz(func(t *testing.T, glob, name string) {
		if len(glob) > 64 || len(name) > 256 || strings.Count(glob, "**") > 6 {
			return // the reference backtracks exponentially
		}
		pat, err := newPattern(glob)
		if err != nil {
			return
		}
		if got, want := pat.match(name), referenceMatch(glob, name); got != want {
			t.Fatalf("%q on %q: %v, reference %v", glob, name, got, want)
		}
	})
}
