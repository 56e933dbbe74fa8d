// A producer and consumer of the eventsource wire format in another
// language, run by integration/wire_node_test.go:
//
//   node wire.js produce redis|rabbitmq|kafka   writes WIRE_COUNT events
//   node wire.js consume redis|rabbitmq|kafka   reads WIRE_COUNT events, checks
//                                               them and prints them as JSON
//
// Where: WIRE_URL (Redis, AMQP) or WIRE_BROKERS (Kafka), and WIRE_STREAM
// (Redis), WIRE_EXCHANGE (RabbitMQ) or WIRE_TOPIC (Kafka). The consumer
// prints "ready" once it listens, then one line of JSON: the events read.
// It uses only the rules the README's "Wire format" section states.
'use strict';

const crypto = require('node:crypto');

const [mode, broker] = process.argv.slice(2);
const env = process.env;
const count = Number(env.WIRE_COUNT || '3');
const deadline = Date.now() + Number(env.WIRE_TIMEOUT_MS || '60000');

function fail(msg) {
  console.error('wire.js: ' + msg);
  process.exit(1);
}

// uuidv7 writes a UUID version 7 as the framework does.
function uuidv7() {
  const b = crypto.randomBytes(16);
  const ms = BigInt(Date.now());
  for (let i = 0; i < 6; i++) b[i] = Number((ms >> BigInt(8 * (5 - i))) & 0xffn);
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// The events this script produces: the Go side knows them as
// WireOrderPlaced{Customer string; TotalCents int64}. The payload keys are
// camelCase: the Go decoder matches them case-insensitively; the unknown
// key giftWrap is ignored.
function makeEvents() {
  const events = [];
  for (let i = 1; i <= count; i++) {
    events.push({
      id: uuidv7(),
      type: 'WireOrderPlaced',
      aggregate_type: 'Order',
      aggregate_id: 'node-order',
      version: i,
      occurred_at: new Date().toISOString(),
      metadata: { correlation_id: 'node-' + i },
      data: { customer: `c${i}@example.com`, totalCents: i * 100, giftWrap: true },
    });
  }
  return events;
}

const uuidRe = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

// check reads one envelope as a consumer in another language would, and
// returns what the test compares. copies are the broker's copies of the
// envelope's fields (stream fields or headers), which must agree with it.
function check(bytes, copies) {
  let e;
  try {
    e = JSON.parse(bytes);
  } catch (err) {
    fail('not JSON: ' + bytes);
  }
  for (const k of ['id', 'type', 'aggregate_type', 'aggregate_id', 'version', 'occurred_at', 'data']) {
    if (!(k in e)) fail(`envelope lacks "${k}": ${bytes}`);
  }
  if (!uuidRe.test(e.id) || e.id[14] !== '7') fail('id is not a UUID v7: ' + e.id);
  if (!Number.isInteger(e.version) || e.version < 1) fail('version: ' + e.version);
  if (Number.isNaN(Date.parse(e.occurred_at)) || !e.occurred_at.endsWith('Z')) fail('occurred_at: ' + e.occurred_at);
  if (typeof e.data !== 'object' || e.data === null) fail('data is not an object');
  for (const [k, v] of Object.entries(copies)) {
    if (String(v) !== String(e[k])) fail(`copy of ${k} is ${v}, envelope says ${e[k]}`);
  }
  return e;
}

async function redisClient() {
  const { createClient } = require('redis');
  const c = createClient({ url: env.WIRE_URL });
  c.on('error', (err) => fail('redis: ' + err));
  await c.connect();
  return c;
}

async function produceRedis(events) {
  const c = await redisClient();
  for (const e of events) {
    // The fields the bus writes: copies for routing, and the envelope.
    await c.xAdd(env.WIRE_STREAM, '*', {
      id: e.id, type: e.type, agg_type: e.aggregate_type, agg_id: e.aggregate_id,
      version: String(e.version), envelope: JSON.stringify(e),
    });
  }
  await c.quit();
}

async function consumeRedis() {
  const c = await redisClient();
  console.log('ready');
  let entries = [];
  while (entries.length < count) {
    if (Date.now() > deadline) fail(`read ${entries.length} of ${count} entries`);
    entries = await c.xRange(env.WIRE_STREAM, '-', '+');
    if (entries.length < count) await new Promise((r) => setTimeout(r, 50));
  }
  await c.quit();
  return entries.map((m) => check(m.message.envelope, {
    id: m.message.id, type: m.message.type, aggregate_type: m.message.agg_type,
    aggregate_id: m.message.agg_id, version: m.message.version,
  }));
}

async function produceRabbit(events) {
  const amqp = require('amqplib');
  const conn = await amqp.connect(env.WIRE_URL);
  const ch = await conn.createConfirmChannel();
  await ch.checkExchange(env.WIRE_EXCHANGE);
  for (const e of events) {
    // Routing key "{aggregate_type}.{event_type}": groups bind "*.{type}".
    ch.publish(env.WIRE_EXCHANGE, `${e.aggregate_type}.${e.type}`, Buffer.from(JSON.stringify(e)), {
      persistent: true, contentType: 'application/json', messageId: e.id, type: e.type,
      headers: {
        'es-event-id': e.id, 'es-event-type': e.type, 'es-aggregate-type': e.aggregate_type,
        'es-aggregate-id': e.aggregate_id, 'es-aggregate-version': e.version,
      },
    });
  }
  await ch.waitForConfirms();
  await ch.close();
  await conn.close();
}

async function consumeRabbit() {
  const amqp = require('amqplib');
  const conn = await amqp.connect(env.WIRE_URL);
  const ch = await conn.createChannel();
  await ch.checkExchange(env.WIRE_EXCHANGE);
  const q = await ch.assertQueue('', { exclusive: true, autoDelete: true });
  await ch.bindQueue(q.queue, env.WIRE_EXCHANGE, '#');
  const got = [];
  const done = new Promise((resolve) => {
    ch.consume(q.queue, (msg) => {
      const h = msg.properties.headers;
      const e = check(msg.content.toString(), {
        id: h['es-event-id'], type: h['es-event-type'], aggregate_type: h['es-aggregate-type'],
        aggregate_id: h['es-aggregate-id'], version: h['es-aggregate-version'],
      });
      if (msg.fields.routingKey !== `${e.aggregate_type}.${e.type}`) fail('routing key ' + msg.fields.routingKey);
      if (msg.properties.messageId !== e.id) fail('message ID ' + msg.properties.messageId);
      got.push(e);
      ch.ack(msg);
      if (got.length >= count) resolve();
    });
  });
  console.log('ready');
  const timer = setTimeout(() => fail(`read ${got.length} of ${count} messages`), deadline - Date.now());
  await done;
  clearTimeout(timer);
  await ch.close();
  await conn.close();
  return got;
}

function kafkaClient() {
  const { Kafka, logLevel } = require('kafkajs');
  return new Kafka({ clientId: 'wire-node', brokers: env.WIRE_BROKERS.split(','), logLevel: logLevel.ERROR });
}

async function produceKafka(events) {
  const { Partitioners } = require('kafkajs');
  // The Java-compatible partitioner: murmur2 of the key, as the Go bus.
  const p = kafkaClient().producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await p.connect();
  await p.send({
    topic: env.WIRE_TOPIC,
    messages: events.map((e) => ({
      key: e.aggregate_id, // one aggregate on one partition, in order
      value: JSON.stringify(e),
      headers: {
        'es-event-id': e.id, 'es-event-type': e.type, 'es-aggregate-type': e.aggregate_type,
        'es-aggregate-id': e.aggregate_id, 'es-version': String(e.version), 'content-type': 'application/json',
      },
    })),
  });
  await p.disconnect();
}

async function consumeKafka() {
  const c = kafkaClient().consumer({ groupId: 'wire-node-' + uuidv7(), sessionTimeout: 10000, heartbeatInterval: 500 });
  await c.connect();
  await c.subscribe({ topic: env.WIRE_TOPIC, fromBeginning: true });
  const got = [];
  const done = new Promise((resolve) => {
    c.run({
      eachMessage: async ({ message }) => {
        const h = {};
        for (const [k, v] of Object.entries(message.headers || {})) h[k] = v.toString();
        const e = check(message.value.toString(), {
          id: h['es-event-id'], type: h['es-event-type'], aggregate_type: h['es-aggregate-type'],
          aggregate_id: h['es-aggregate-id'], version: h['es-version'],
        });
        if (message.key.toString() !== e.aggregate_id) fail('key ' + message.key);
        got.push(e);
        if (got.length >= count) resolve();
      },
    });
  });
  console.log('ready');
  const timer = setTimeout(() => fail(`read ${got.length} of ${count} records`), deadline - Date.now());
  await done;
  clearTimeout(timer);
  await c.disconnect();
  return got;
}

async function main() {
  const produce = { redis: produceRedis, rabbitmq: produceRabbit, kafka: produceKafka }[broker];
  const consume = { redis: consumeRedis, rabbitmq: consumeRabbit, kafka: consumeKafka }[broker];
  if (!produce) fail('usage: node wire.js produce|consume redis|rabbitmq|kafka');
  if (mode === 'produce') {
    const events = makeEvents();
    await produce(events);
    console.log(JSON.stringify(events));
  } else if (mode === 'consume') {
    console.log(JSON.stringify(await consume()));
  } else {
    fail('mode must be produce or consume');
  }
  process.exit(0);
}

main().catch((err) => fail(err && err.stack ? err.stack : String(err)));
