// Package integration holds the tests that run against real brokers and
// databases. It is a module of its own so that testcontainers-go and the
// Kafka-protocol test broker never enter the build of a program that
// imports the framework.
package integration
