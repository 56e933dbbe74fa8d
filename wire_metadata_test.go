package eventsource

import (
	"encoding/json"
	"maps"
	"testing"
)

// readMetadata must decode exactly what json.Unmarshal into a Metadata
// decodes, and refuse what it refuses.
func FuzzReadMetadata(f *testing.F) {
	for _, seed := range []string{
		`{}`, `null`, ` { } `,
		`{"correlation_id":"c","causation_id":"k","tenant_id":"t","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"a=b","extra":{"x":"1","y":""}}`,
		`{"Correlation_ID":"case","TRACEPARENT":"tp"}`,
		`{"correlation_id":null,"extra":null}`,
		`{"extra":{"a":null,"b":"\u00e9\n\"q\""}}`,
		`{"extra":{"a":"1"},"extra":{"b":"2"}}`,
		`{"extra":{"a":"1"},"extra":null}`,
		`{"unknown":[1,{"x":null}],"tenant_id":"t"}`,
		`{"tenant_id":"a","tenant_id":"b"}`,
		`{"tenant_id":5}`, `{"extra":{"a":1}}`, `{"extra":[]}`, `{"extra":"x"}`,
		`{"tenant_id":"\xff\xfe"}`, `{"tenant_id":"a"`, `{"tenant_id":"a"}x`, `[]`, `"s"`, `{"a":}`,
		`{"unknown":tru}`, `{"extra":{"k":"v",}}`, `{,}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want Metadata
		wantErr := json.Unmarshal(b, &want)
		var got Metadata
		gotErr := readMetadata(b, &got)
		if (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("%q: json.Unmarshal error %v, readMetadata error %v", b, wantErr, gotErr)
		}
		if wantErr != nil {
			return
		}
		if got.CorrelationID != want.CorrelationID || got.CausationID != want.CausationID || got.TenantID != want.TenantID ||
			got.TraceParent != want.TraceParent || got.TraceState != want.TraceState ||
			!maps.Equal(got.Extra, want.Extra) || (got.Extra == nil) != (want.Extra == nil) {
			t.Fatalf("%q: readMetadata = %+v, json.Unmarshal = %+v", b, got, want)
		}
	})
}
