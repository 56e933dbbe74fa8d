package eventsource

import (
	"encoding/json"
	"maps"
	"testing"
)

// reflectedMetadata is Metadata without its JSON methods: what
// encoding/json's reflection makes of it is the reference.
type reflectedMetadata Metadata

// readMetadata must decode exactly what json.Unmarshal into a Metadata
// would by reflection, and refuse what it refuses.
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
		wantErr := json.Unmarshal(b, (*reflectedMetadata)(&want))
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

// Metadata's MarshalJSON writes what encoding/json's reflection writes,
// and json.Unmarshal with its UnmarshalJSON reads it back.
func FuzzMetadataJSON(f *testing.F) {
	f.Add("c", "", "t", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "", "k", "v")
	f.Add("", "", "", "", "", "", "")
	f.Add("<&>", "\u2028\n\"", "\xff", "é", "a=b,c=d", "", "")
	f.Fuzz(func(t *testing.T, corr, cause, tenant, tp, ts, k, v string) {
		m := Metadata{CorrelationID: corr, CausationID: cause, TenantID: tenant, TraceParent: tp, TraceState: ts}
		if k != "" || v != "" {
			m.Extra = map[string]string{k: v, "z" + k: v + "z"}
		}
		got, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(reflectedMetadata(m))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("MarshalJSON = %s, encoding/json = %s", got, want)
		}
		var back, wantBack Metadata
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(got, (*reflectedMetadata)(&wantBack)); err != nil {
			t.Fatal(err)
		}
		if back.CorrelationID != wantBack.CorrelationID || back.TraceParent != wantBack.TraceParent ||
			back.TenantID != wantBack.TenantID || back.CausationID != wantBack.CausationID ||
			back.TraceState != wantBack.TraceState || !maps.Equal(back.Extra, wantBack.Extra) {
			t.Fatalf("read back %+v, encoding/json %+v", back, wantBack)
		}
	})
}
