package eventsource

import "errors"

// EnvelopeType reads only the type name of an envelope in the wire format,
// checking the envelope's JSON structure but decoding no payload. A
// consumer uses it to tell whether a message it will not handle is what
// its transport's type field says. Bytes that are not an envelope return a
// *DecodeError matching ErrMalformed.
func EnvelopeType(b []byte) (string, error) {
	w, err := readWire(b, nil)
	if err != nil {
		return "", &DecodeError{Type: w.typ, Kind: ErrMalformed, Cause: err}
	}
	if w.typ == "" {
		return "", &DecodeError{Kind: ErrMalformed, Cause: errors.New(`missing "type"`)}
	}
	return w.typ, nil
}
