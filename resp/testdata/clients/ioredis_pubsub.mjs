// Publish/subscribe through ioredis, unchanged, against a server.
//
// Usage: node ioredis_pubsub.mjs HOST:PORT
//
// ioredis 5 speaks RESP2. Before a connection is ready it sends CLIENT
// SETNAME, CLIENT SETINFO and, as its ready check, INFO: a server that
// fails INFO never gets past connect. Prints one JSON line of what
// happened; resp/clients_test.go checks every value, and runs the same
// script against redis-server to show the expected values are Redis's own.
// Exits 1 on an error, after printing it.

import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
let Redis;
try {
  ({ default: Redis } = await import('ioredis'));
} catch (err) {
  console.error(`node_modules missing: run npm ci in resp/testdata/clients (make deps): ${err.message}`);
  process.exit(2);
}

const PIPELINED = 1000;
const PLAIN = 10;
const ODD_PAYLOAD = 'line 1\r\nline 2 \u2603 \u00e9\n';
const WAIT_MS = 30000; // bound on waiting for the messages; not a pause

const [host, port] = process.argv[2].split(/:(?=[^:]*$)/);

// errors collects every 'error' event: none is expected.
const errors = [];

async function main() {
  const out = {
    client: 'ioredis',
    version: require('ioredis/package.json').version,
  };

  const options = {
    host,
    port: Number(port),
    connectionName: 'herald-ioredis',
    lazyConnect: true,
    retryStrategy: () => null, // a failed connect or ready check fails the script
    maxRetriesPerRequest: 0,
  };
  const pub = new Redis(options);
  pub.on('error', (err) => errors.push(`publisher: ${err.message}`));
  await pub.connect(); // settles once the INFO ready check has passed
  out.status = pub.status;
  out.getname = await pub.client('GETNAME');

  const sub = pub.duplicate();
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
  sub.on('message', (ch, msg) => record(['message', ch, msg]));
  sub.on('pmessage', (pattern, ch, msg) => record(['pmessage', pattern, ch, msg]));
  out.subscribed = [await sub.subscribe('news'), await sub.psubscribe('news.*')];

  out.numsub = await pub.pubsub('NUMSUB', 'news', 'nobody');
  out.numpat = await pub.pubsub('NUMPAT');
  // PING while subscribed: the RESP2 reply is ["pong", <arg or "">].
  out.ping = await sub.ping();
  out.ping_arg = await sub.ping('hi');

  const expected = [];
  const plain = [];
  for (let i = 0; i < PLAIN; i++) {
    plain.push(await pub.publish('news', `plain-${i}`));
    expected.push(['message', 'news', `plain-${i}`]);
    plain.push(await pub.publish('news.sport', `sport-${i}`));
    expected.push(['pmessage', 'news.*', 'news.sport', `sport-${i}`]);
  }
  // Line breaks and multi-byte characters inside a payload.
  plain.push(await pub.publish('news', ODD_PAYLOAD));
  expected.push(['message', 'news', ODD_PAYLOAD]);
  plain.push(await pub.publish('nobody', 'lost'));
  out.plain_receivers = plain;

  const pipe = pub.pipeline();
  for (let i = 0; i < PIPELINED; i++) {
    if (i % 2 === 0) {
      pipe.publish('news', `pipe-${i}`);
      expected.push(['message', 'news', `pipe-${i}`]);
    } else {
      pipe.publish('news.bulk', `pipe-${i}`);
      expected.push(['pmessage', 'news.*', 'news.bulk', `pipe-${i}`]);
    }
  }
  const results = await pipe.exec();
  out.pipelined_replies = results.length;
  out.pipelined_errors = results.filter(([err]) => err).map(([err]) => err.message);
  out.pipelined_receivers = [...new Set(results.map(([, n]) => n))].sort();

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

  // ioredis settles an argument-less UNSUBSCRIBE only on a confirmation
  // whose count (channels and patterns together) is 0, so the pattern goes
  // first, by name.
  out.unsubscribed = [await sub.punsubscribe('news.*'), await sub.unsubscribe()];
  // Out of subscriber mode: ordinary commands work again.
  out.ping_after = await sub.ping();
  // The confirmations have been read: publishers must see no subscriber.
  out.numsub_after = await pub.pubsub('NUMSUB', 'news');
  out.publish_after = await pub.publish('news', 'late');

  await sub.quit();
  await pub.quit();
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
