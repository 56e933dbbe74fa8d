module github.com/eventsource-go/eventsource/bench

go 1.26.0

replace github.com/eventsource-go/eventsource => ../
