// Publish/subscribe through node-redis (npm "redis"), unchanged, against a server.
//
// Usage: node noderedis_pubsub.mjs HOST:PORT default|2|3
//
// The second argument is node-redis's RESP option: "default" leaves it
// unset (RESP2, no HELLO: CLIENT SETNAME names the connection); 2 and 3
// send HELLO 2 or HELLO 3 with SETNAME. Prints one JSON line of what
// happened; resp/clients_test.go checks every value, and runs the same
// script against redis-server to show the expected values are Redis's own.
// Exits 1 on an error, after printing it.

import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
let redis;
try {
  redis = await import('redis');
} catch (err) {
  console.error(`node_modules missing: run npm ci in resp/testdata/clients (make deps): ${err.message}`);
  process.exit(2);
}

const PIPELINED = 1000;
const PLAIN = 10;
const ODD_PAYLOAD = 'line 1\r\nline 2 \u2603 \u00e9\n';
const WAIT_MS = 30000; // bound on waiting for the messages; not a pause

const [host, port] = process.argv[2].split(/:(?=[^:]*$)/);
const protocol = process.argv[3];
const RESP = protocol === 'default' ? undefined : Number(protocol);

// errors collects every 'error' event: none is expected.
const errors = [];

async function main() {
  const out = {
    client: 'node-redis',
    version: require('redis/package.json').version,
    resp: protocol,
  };

  const client = redis.createClient({
    socket: { host, port: Number(port), reconnectStrategy: false },
    ...(RESP === undefined ? {} : { RESP }),
    name: 'herald-noderedis',
  });
  client.on('error', (err) => errors.push(`client: ${err.message}`));
  await client.connect();
  out.getname = await client.clientGetName();

  const sub = client.duplicate();
  sub.on('error', (err) => errors.push(`subscriber: ${err.message}`));
  await sub.connect();

  const got = [];
  let expectedCount = Infinity;
  let allReceived;
  const received = new Promise((resolve) => { allReceived = resolve; });
  const record = (m) => {
    got.push(m);
    if (got.length >= expectedCount) allReceived();
  };
  await sub.subscribe('news', (msg, ch) => record(['message', ch, msg]));
  await sub.pSubscribe('news.*', (msg, ch) => record(['pmessage', 'news.*', ch, msg]));
  await sub.sSubscribe('shard', (msg, ch) => record(['smessage', ch, msg]));

  out.numsub = await client.pubSubNumSub(['news', 'nobody']);
  out.numpat = await client.pubSubNumPat();
  out.shardnumsub = await client.pubSubShardNumSub(['shard']);
  // PING while subscribed: in RESP2 the reply is ["pong", ""], which
  // node-redis turns into "pong"; in RESP3 it is an ordinary PONG.
  out.ping = await sub.ping();

  const expected = [];
  // RESP3 lifts RESP2's subscribed-mode restrictions: the subscriber
  // itself may publish, and its replies and pushes share the connection.
  out.subscriber_commands = null;
  if (RESP === 3) {
    out.subscriber_commands = await Promise.all([
      sub.publish('news', 'self-0'),
      sub.pubSubNumSub(['news']),
      sub.clientGetName(),
    ]);
    expected.push(['message', 'news', 'self-0']);
  }
  const plain = [];
  for (let i = 0; i < PLAIN; i++) {
    plain.push(await client.publish('news', `plain-${i}`));
    expected.push(['message', 'news', `plain-${i}`]);
    plain.push(await client.publish('news.sport', `sport-${i}`));
    expected.push(['pmessage', 'news.*', 'news.sport', `sport-${i}`]);
    plain.push(await client.sPublish('shard', `shard-${i}`));
    expected.push(['smessage', 'shard', `shard-${i}`]);
  }
  // Line breaks and multi-byte characters inside a payload.
  plain.push(await client.publish('news', ODD_PAYLOAD));
  expected.push(['message', 'news', ODD_PAYLOAD]);
  plain.push(await client.publish('nobody', 'lost'));
  out.plain_receivers = plain;

  // Commands issued in one tick go out as one pipeline.
  const pending = [];
  for (let i = 0; i < PIPELINED; i++) {
    if (i % 2 === 0) {
      pending.push(client.publish('news', `pipe-${i}`));
      expected.push(['message', 'news', `pipe-${i}`]);
    } else {
      pending.push(client.publish('news.bulk', `pipe-${i}`));
      expected.push(['pmessage', 'news.*', 'news.bulk', `pipe-${i}`]);
    }
  }
  const replies = await Promise.all(pending);
  out.pipelined_replies = replies.length;
  out.pipelined_receivers = [...new Set(replies)].sort();

  expectedCount = expected.length;
  if (got.length >= expectedCount) allReceived();
  let timer;
  await Promise.race([
    received,
    new Promise((resolve) => { timer = setTimeout(resolve, WAIT_MS); }),
  ]);
  clearTimeout(timer);
  out.received = got.length;
  out.in_order = JSON.stringify(got) === JSON.stringify(expected);
  out.first_mismatch = null;
  for (let i = 0; i < Math.min(got.length, expected.length); i++) {
    if (JSON.stringify(got[i]) !== JSON.stringify(expected[i])) {
      out.first_mismatch = { index: i, got: got[i], want: expected[i] };
      break;
    }
  }

  // node-redis 5 settles an argument-less UNSUBSCRIBE or PUNSUBSCRIBE only
  // on a confirmation whose count is 0, and the count covers channels and
  // patterns together (node-redis PR #3407): with the pattern still there,
  // unsubscribe() would never settle, against Redis too. So the pattern goes
  // first, by name; then UNSUBSCRIBE and SUNSUBSCRIBE with no arguments.
  await sub.pUnsubscribe('news.*');
  await sub.unsubscribe();
  await sub.sUnsubscribe();
  out.subscribed_after = sub.isPubSubActive;
  // The confirmations have been read: publishers must see no subscriber.
  out.numsub_after = await client.pubSubNumSub(['news']);
  out.publish_after = await client.publish('news', 'late');
  out.spublish_after = await client.sPublish('shard', 'late');
  out.ping_after = String(await sub.ping());

  await sub.close();
  await client.close();
  out.errors = errors;
  console.log(JSON.stringify(out));
}

try {
  await main();
} catch (err) {
  console.error(err);
  console.error('errors:', errors);
  process.exit(1);
}
