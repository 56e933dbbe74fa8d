// Package redact keeps credentials out of the broker URLs that buses log
// and put in errors.
package redact

import "net/url"

// URL returns raw with any password replaced by "xxxxx"; a URL that does
// not parse is not echoed at all, since it may still hold a password.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}
