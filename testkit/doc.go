// Package testkit gives a Go test a ready Redis, RabbitMQ, Kafka or
// PostgreSQL, and a bus or store of this framework wired to it, in one
// call:
//
//	func TestShipping(t *testing.T) {
//		b := testkit.RedisBus(t, redis.Config{Registry: registry, Group: "shipping"})
//		// subscribe, b.Start, publish, assert …
//	}
//
// Each server is found in this order:
//
//  1. its variable, when set: EVENTSOURCE_REDIS_URL, EVENTSOURCE_AMQP_URL,
//     EVENTSOURCE_KAFKA_BROKERS or EVENTSOURCE_POSTGRES_URL;
//  2. else a container started with testcontainers-go, when a Docker engine
//     answers (DOCKER_HOST, or the usual sockets). The image is the
//     default (redis:7-alpine, rabbitmq:3.13-alpine, apache/kafka:3.9.0,
//     postgres:16-alpine), or EVENTSOURCE_REDIS_IMAGE,
//     EVENTSOURCE_RABBITMQ_IMAGE, EVENTSOURCE_KAFKA_IMAGE,
//     EVENTSOURCE_POSTGRES_IMAGE, or WithImage. The tests of one test
//     binary share one container per server and image (Dedicated gives a
//     test its own);
//  3. else the test is skipped with a message saying how to enable it, or
//     fails when EVENTSOURCE_REQUIRE_BROKERS=1.
//
// A container whose start fails is removed. Shared containers are removed
// by Terminate, which TestMain calls after the tests (or use Run):
//
//	func TestMain(m *testing.M) { os.Exit(testkit.Run(m)) }
//
// (With testcontainers' reaper, Ryuk, enabled, as it is by default, they
// are removed when the test binary exits anyway.)
//
// Buses and stores are isolated per test: RedisBus, RabbitMQBus and
// KafkaBus use a stream prefix, exchange or topic named after the test and
// delete what they created when it ends; PostgresStore works in a schema of
// the test's own, dropped when it ends.
//
// Start does the same outside a test, for a program or an Example.
package testkit
