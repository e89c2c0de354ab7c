package providers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestSecretNeverPrints formats a canary secret every way it could reach a
// log line, an error or a JSON document.
func TestSecretNeverPrints(t *testing.T) {
	const canary = "CANARY-5ec7e7"
	s := NewSecret([]byte(canary))
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("issued", "secret", s, "struct", struct{ S Secret }{s})
	js, _ := json.Marshal(map[string]any{"s": s, "p": &s})
	text, _ := s.MarshalText()
	outputs := []string{
		fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q %x %X %d", s, s, s, s, s, s, s, s),
		fmt.Sprintf("%v", struct{ S Secret }{s}), fmt.Sprintf("%+v", &struct{ S *Secret }{&s}),
		fmt.Errorf("wrapped: %v", s).Error(), logged.String(), string(js), string(text),
	}
	for _, out := range outputs {
		if strings.Contains(out, canary) || strings.Contains(out, fmt.Sprintf("%x", canary)) {
			t.Errorf("secret printed: %s", out)
		}
	}
	if string(s.Reveal()) != canary {
		t.Fatal("Reveal lost the value")
	}
}
