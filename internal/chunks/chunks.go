// Package chunks is the loop of a large delete done in transactions of a
// bounded size (purging ended sagas, old idempotency keys), so that none
// holds locks or a long transaction for the whole job.
package chunks

// Delete runs deleteChunk, which deletes at most size rows in one
// transaction, until a chunk comes back short: nothing more matches, or
// what is left is locked (PostgreSQL's SKIP LOCKED), which the loop must
// not spin on. It returns how many rows were deleted in all, also with the
// error that stopped it.
func Delete(size int, deleteChunk func() (int64, error)) (int64, error) {
	var total int64
	for {
		n, err := deleteChunk()
		total += n
		if err != nil || n < int64(size) {
			return total, err
		}
	}
}
