package report

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/credbroker/credbroker/audit"
)

// pageElements are the elements the page template writes: any other tag
// in a page came from a value.
var pageElements = map[string]bool{}

func init() {
	for _, e := range strings.Fields(`html head meta title style body header h1 h2 h3 dl dt dd span main section
		div p strong em code table caption thead tbody tfoot tr th td figure figcaption svg desc line text g rect footer`) {
		pageElements[e] = true
	}
}

var tagName = regexp.MustCompile(`^<(/?)([a-zA-Z0-9]+)`)

// FuzzWriteHTML renders a report whose every value from the log — subject,
// credential, reason, policy, version, decision id, install, host and the
// source — is the fuzzer's, and checks that no value adds an element, that
// the page is valid UTF-8 and that it holds no character that does not
// print (the values holding one are shown quoted).
func FuzzWriteHTML(f *testing.F) {
	for _, s := range []string{scripted, hostileCr, bidi, "", "\x00", "\xff\xfe", "</title><script>x</script>",
		"</style>", "]]><!--", "&amp;&lt;", "a\nb\tc", "\u200b", "{{.Source}}", `"'><svg onload=alert(1)>`} {
		f.Add(s, "reason: "+s)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		at := base.Add(time.Hour)
		rows := sliceReader{
			{Time: at, Decision: audit.DecisionDeny, Subject: a, Credential: b, Reason: b, Policy: a, PolicyVersion: b, DecisionID: a, Install: a, Host: b},
			{Time: at, Decision: audit.DecisionError, Subject: b, Credential: a, Reason: a, Policy: "", PolicyVersion: a, DecisionID: b},
			{Time: at, Kind: audit.KindOverride, Reason: a, DecisionID: b, Install: b, Host: a},
			{Time: at, Kind: audit.KindLease, Decision: a},
		}
		rep, err := Build(context.Background(), rows, Options{Since: base, Until: base.Add(2 * time.Hour), Source: a, Generator: b,
			Verification: Verification{Status: Failed, Summary: b, Details: []Fact{{"Problem", a}}}})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := rep.WriteHTML(&buf); err != nil {
			t.Fatal(err)
		}
		page := buf.String()
		if !utf8.ValidString(page) {
			t.Fatal("the page is not valid UTF-8")
		}
		if i := strings.IndexFunc(page, func(r rune) bool { return r != '\n' && !unicode.IsGraphic(r) }); i >= 0 {
			t.Fatalf("the page holds %q at %d", page[i:i+1], i)
		}
		for i := 0; i < len(page); i++ {
			if page[i] != '<' {
				continue
			}
			rest := page[i:]
			if strings.HasPrefix(rest, "<!DOCTYPE html>") {
				continue
			}
			m := tagName.FindStringSubmatch(rest)
			if m == nil || !pageElements[m[2]] {
				end := min(len(rest), 40)
				t.Fatalf("a value added markup: %q", rest[:end])
			}
		}
	})
}
