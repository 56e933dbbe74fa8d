module github.com/eventsource-go/eventsource/integration

go 1.26.0

replace github.com/eventsource-go/eventsource => ../
