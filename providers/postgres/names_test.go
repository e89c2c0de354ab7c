package postgres

import (
	"strings"
	"testing"
)

var roleNameCases = []struct {
	name, prefix, subject, want string
}{
	{"unix uid", "credbroker_", "unix:uid:1000", "credbroker_unix_uid_1000_abcdefghij"},
	{"kubernetes service account", "credbroker_", "system:serviceaccount:payments:payment-processor",
		"credbroker_system_serviceaccount_payments_payment_processor_abcdefghij"[:52] + "_abcdefghij"},
	{"uppercase is lowered", "credbroker_", "AWS:Role/Payments", "credbroker_aws_role_payments_abcdefghij"},
	{"runs of other characters are one underscore", "credbroker_", "a::--//b", "credbroker_a_b_abcdefghij"},
	{"leading and trailing others are dropped", "credbroker_", "--spiffe://x--", "credbroker_spiffe_x_abcdefghij"},
	{"empty subject", "credbroker_", "", "credbroker_abcdefghij"},
	{"nothing usable in the subject", "credbroker_", "ü€:/", "credbroker_abcdefghij"},
	{"quotes and NUL", "credbroker_", "a\"b'c\x00d;DROP ROLE x", "credbroker_a_b_c_d_drop_role_x_abcdefghij"},
	{"short prefix", "cb", "unix:uid:0", "cbunix_uid_0_abcdefghij"},
	{"cut without a trailing underscore", "credbroker_", strings.Repeat("a", 40) + ":b", "credbroker_" + strings.Repeat("a", 40) + "_abcdefghij"},
	{"long subject", "credbroker_", strings.Repeat("x", 500), "credbroker_" + strings.Repeat("x", 41) + "_abcdefghij"},
	{"longest prefix", strings.Repeat("p", maxPrefix), "spiffe://example.org/ns/a", strings.Repeat("p", maxPrefix) + "spiffe_e_abcdefghij"},
}

func TestRoleName(t *testing.T) {
	for _, tt := range roleNameCases {
		t.Run(tt.name, func(t *testing.T) {
			got := roleName(tt.prefix, tt.subject, "abcdefghij")
			if got != tt.want {
				t.Errorf("roleName(%q, %q) = %q, want %q", tt.prefix, tt.subject, got, tt.want)
			}
			checkRoleName(t, tt.prefix, got)
		})
	}
}

// checkRoleName checks what every issued role name is: at most 63 bytes of
// [a-z0-9_] beginning with the prefix, with no run of underscores after it,
// and a name Revoke accepts.
func checkRoleName(t *testing.T, prefix, name string) {
	t.Helper()
	if len(name) > maxIdentifier || !strings.HasPrefix(name, prefix) {
		t.Fatalf("%q: longer than %d bytes or without the prefix %q", name, maxIdentifier, prefix)
	}
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '_') {
			t.Fatalf("%q: byte %q outside [a-z0-9_]", name, ch)
		}
	}
	if strings.Contains(name[len(prefix):], "__") {
		t.Fatalf("%q: a run of underscores after the prefix", name)
	}
	if got, err := leaseRole(prefix, Kind+":"+name); err != nil || got != name {
		t.Fatalf("leaseRole of %q: %q, %v", name, got, err)
	}
}

func FuzzRoleName(f *testing.F) {
	for _, tt := range roleNameCases {
		f.Add(tt.prefix, tt.subject)
	}
	f.Fuzz(func(t *testing.T, prefix, subject string) {
		if checkPrefix(prefix) != nil || prefix == "" {
			prefix = DefaultRolePrefix
		}
		a, b := roleName(prefix, subject, newSuffix()), roleName(prefix, subject, newSuffix())
		checkRoleName(t, prefix, a)
		checkRoleName(t, prefix, b)
		if a == b {
			t.Fatalf("two issues for %q share the role name %q", subject, a)
		}
	})
}

var leaseRoleCases = []struct {
	name, id, want string
	ok             bool
}{
	{"issued role", "postgres:credbroker_unix_uid_1000_abcdefghij", "credbroker_unix_uid_1000_abcdefghij", true},
	{"another kind", "vault:credbroker_x", "", false},
	{"no kind", "credbroker_x", "", false},
	{"another prefix", "postgres:postgres", "", false},
	{"the prefix alone", "postgres:credbroker_", "", false},
	{"quote", `postgres:credbroker_x"; DROP ROLE admin; --`, "", false},
	{"uppercase", "postgres:credbroker_X", "", false},
	{"too long", "postgres:credbroker_" + strings.Repeat("a", 60), "", false},
	{"empty", "", "", false},
}

func TestLeaseRole(t *testing.T) {
	for _, tt := range leaseRoleCases {
		t.Run(tt.name, func(t *testing.T) {
			got, err := leaseRole(DefaultRolePrefix, tt.id)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("leaseRole(%q) = %q, %v; want %q, ok %v", tt.id, got, err, tt.want, tt.ok)
			}
		})
	}
}

// FuzzLeaseRole: whatever a lease id holds, an accepted role is one this
// provider could have issued.
func FuzzLeaseRole(f *testing.F) {
	for _, tt := range leaseRoleCases {
		f.Add(tt.id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		role, err := leaseRole(DefaultRolePrefix, id)
		if err != nil {
			return
		}
		if Kind+":"+role != id || len(role) > maxIdentifier || !strings.HasPrefix(role, DefaultRolePrefix) ||
			strings.Trim(role, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			t.Fatalf("leaseRole(%q) accepted %q", id, role)
		}
	})
}

func TestQuoteLiteral(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"credbroker install 0a1b", "'credbroker install 0a1b'"},
		{"it's", "'it''s'"},
		{`a\b`, `E'a\\b'`},
		{"nul\x00", "'nul'"},
	} {
		if got := quoteLiteral(tt.in); got != tt.want {
			t.Errorf("quoteLiteral(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestPassword(t *testing.T) {
	a, b := newPassword(), newPassword()
	if len(a) != 43 || a == b || strings.Trim(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
		t.Fatalf("passwords %q %q: want 43 distinct URL-safe characters", a, b)
	}
}

func BenchmarkScramVerifier(b *testing.B) {
	salt := make([]byte, 16)
	pw := newPassword()
	for b.Loop() {
		if _, err := scramVerifier(pw, salt, scramIterations); err != nil {
			b.Fatal(err)
		}
	}
}
