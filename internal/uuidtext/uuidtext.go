// Package uuidtext writes a UUID's canonical text form into a buffer the
// caller owns: uuid.UUID.String allocates a string per call, which the
// encoders of every event pay.
package uuidtext

import (
	"encoding/hex"

	"github.com/google/uuid"
)

// Len is the length of the canonical form, xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx.
const Len = 36

// Append appends id as id.String() writes it.
func Append(buf []byte, id uuid.UUID) []byte {
	var s [Len]byte
	hex.Encode(s[0:8], id[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], id[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], id[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], id[8:10])
	s[23] = '-'
	hex.Encode(s[24:], id[10:])
	return append(buf, s[:]...)
}
