package rabbitmq

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/eventsource-go/eventsource/bus/bustest"
)

// TestConfigPrintsNoPassword: fmt printed the URL, password and all, for
// %v, %+v and %#v of a Config.
func TestConfigPrintsNoPassword(t *testing.T) {
	const secret = "s3cret-pw"
	cfg := Config{URL: "amqp://user:" + secret + "@rabbit.example:5672/vh", Registry: bustest.NewRegistry(), Group: "billing"}
	printed := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x", "%10.4v"} {
		printed[verb] = fmt.Sprintf(verb, cfg)
		printed[verb+" of a pointer"] = fmt.Sprintf(verb, &cfg)
	}
	printed["Sprint"] = fmt.Sprint(cfg)
	printed["Println of a slice"] = fmt.Sprintln([]Config{cfg})
	printed["a field of a struct, %+v"] = fmt.Sprintf("%+v", struct{ C Config }{cfg})
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
		if s := printed[verb]; !strings.Contains(s, "rabbit.example") || !strings.Contains(s, "billing") {
			t.Errorf("%s does not show the config: %s", verb, s)
		}
	}
	if s := printed["%#v"]; !strings.HasPrefix(s, "rabbitmq.Config{URL:\"amqp://user:xxxxx@rabbit.example:5672/vh\"") {
		t.Errorf("%%#v = %s", s)
	}
}
