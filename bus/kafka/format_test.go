package kafka

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go/sasl/plain"

	"github.com/eventsource-go/eventsource/bus/bustest"
)

// TestConfigPrintsNoSASLPassword: String kept the password out of %v, but
// %#v and the verbs fmt does not hand to String (%d, %x, …) printed the
// SASL mechanism's fields.
func TestConfigPrintsNoSASLPassword(t *testing.T) {
	const secret = "s3cret-pw"
	cfg := Config{Brokers: []string{"kafka.example:9092"}, Registry: bustest.NewRegistry(), Group: "billing",
		SASL: plain.Mechanism{Username: "u", Password: secret}}
	printed := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x", "%10.4v"} {
		printed[verb] = fmt.Sprintf(verb, cfg)
		printed[verb+" of a pointer"] = fmt.Sprintf(verb, &cfg)
	}
	printed["a field of a struct, %#v"] = fmt.Sprintf("%#v", struct{ C Config }{cfg})
	for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
		"slog text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		"slog JSON": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var buf bytes.Buffer
		log := slog.New(h(&buf))
		log.Info("config", "config", cfg)
		log.Info("config", slog.Any("config", &cfg))
		printed[name] = buf.String()
	}
	for how, s := range printed {
		if strings.Contains(s, secret) || strings.Contains(s, fmt.Sprintf("%x", secret)) {
			t.Errorf("%s prints the password: %s", how, s)
		}
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "slog text", "slog JSON"} {
		if s := printed[verb]; !strings.Contains(s, "kafka.example") || !strings.Contains(s, "billing") || !strings.Contains(s, "PLAIN") {
			t.Errorf("%s does not show the config: %s", verb, s)
		}
	}
	if s := printed["%#v"]; !strings.HasPrefix(s, "kafka.Config{Brokers:[]string{\"kafka.example:9092\"}") {
		t.Errorf("%%#v = %s", s)
	}
}
