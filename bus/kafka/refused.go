package kafka

import (
	"errors"
	"fmt"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource/bus/consumer"
)

// refusal marks err with consumer.ErrRefused when the client or the broker
// refused the record itself, so that writing it again cannot succeed: over
// the size limits, or a record the broker will not take.
func refusal(err error) error {
	if err != nil && isRefusal(err) {
		return fmt.Errorf("%w: %w", consumer.ErrRefused, err)
	}
	return err
}

func isRefusal(err error) bool {
	var werrs kafkago.WriteErrors // one record written: its error is the batch's
	if errors.As(err, &werrs) {
		for _, e := range werrs {
			if e != nil && isRefusal(e) {
				return true
			}
		}
		return false
	}
	return isTooLarge(err) ||
		errors.Is(err, kafkago.RecordListTooLarge) ||
		errors.Is(err, kafkago.InvalidRecord)
}
