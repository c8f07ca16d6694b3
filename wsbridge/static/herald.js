// herald.js: Herald's browser client. One file, no dependencies, no build
// step; Herald serves it at /herald.js.
//
//   import { Herald } from '/herald.js';
//   const h = new Herald();                      // ws(s)://<this page's host>/ws
//   h.on('state', (state) => console.log(state)); // connecting, open, closed
//   const sub = h.subscribe('chat:demo', (m) => console.log(m.seq, m.data), { since: 0 });
//   const { epoch, seq } = await h.publish('chat:demo', 'hello'); // --allow-browser-publish
//   sub.unsubscribe();
//
// It is an ES module. Loaded with <script type="module" src="/herald.js">
// it also sets window.Herald, for pages whose own scripts are not modules
// (use it from a DOMContentLoaded handler: module scripts run just before).
//
// What it guarantees, per channel subscription: messages reach the callback
// in sequence order, each once, also across reconnects. After a drop it
// reconnects (exponential backoff with full jitter) and resubscribes each
// channel after the last (epoch, seq) it delivered, so the server replays
// what was missed from its retained history. When history no longer reaches
// back that far, or the channel was reset (a new epoch), it says so with a
// 'gap' event before the messages that follow. A new channel subscription
// learns its starting position from the server at once (a resume event),
// so it resumes without a gap even before its first message. Pattern
// subscriptions have no position: they resume live, and miss what was
// published while disconnected.
//
// Protocol: one JSON request per WebSocket text frame; the server answers
// with JSON events, one per line, several per frame. See docs/recipes.md.

const DEFAULTS = {
  minDelay: 250, // first reconnect delay, and the floor of every delay (ms)
  maxDelay: 30000, // ceiling of the reconnect delay (ms)
  stableAfter: 10000, // an open connection this old resets the backoff (ms)
  pingInterval: 25000, // how often to check the server answers (ms)
  pongTimeout: 10000, // no pong within this: the connection is dead (ms)
  WebSocket: globalThis.WebSocket, // for other runtimes and tests
};

/** An error the server answered with ({"type":"error"}), or a local one. */
export class HeraldError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'HeraldError';
    this.code = code; // forbidden, bad_request, unavailable, timeout, too_large, disconnected, closed, ...
  }
}

/** One callback's interest in a channel or pattern; see Herald.subscribe. */
class Subscription {
  constructor(herald, kind, name, onMessage, onGap) {
    this._herald = herald;
    this.kind = kind; // 'channel' or 'pattern'
    this.name = name;
    this._onMessage = onMessage;
    this._onGap = onGap;
    this.active = true;
  }

  /** The channel's last delivered position, {epoch, seq}, or null. */
  get position() {
    const ch = this.kind === 'channel' && this._herald._channels.get(this.name);
    return ch && ch.position ? { ...ch.position } : null;
  }

  /** Stops delivery to this subscription's callbacks. Idempotent. */
  unsubscribe() {
    if (!this.active) return;
    this.active = false;
    this._herald._remove(this);
  }
}

export class Herald {
  /**
   * @param {string} [url] ws://, wss://, http(s):// or a path; default
   *   ws(s)://<location.host>/ws.
   * @param {object} [options] see DEFAULTS.
   */
  constructor(url, options) {
    if (url !== null && typeof url === 'object') [url, options] = [undefined, url];
    this.url = wsURL(url === undefined ? '/ws' : url);
    this.options = { ...DEFAULTS, ...options };
    this.state = 'closed';
    this.attempt = 0; // reconnect attempts since the last stable connection
    this._channels = new Map(); // channel -> {position: {epoch, seq} | null, subs: Set}
    this._patterns = new Map(); // pattern -> Set of Subscription
    this._listeners = new Map(); // event name -> Set of functions
    this._pending = new Map(); // request id -> {req, resolve, reject, sent}
    this._nextID = 1;
    this._ws = null;
    this._closed = false;
    this._timers = {};
    // Connect after the caller's synchronous code, so listeners it adds
    // right after construction see 'connecting'.
    queueMicrotask(() => this._connect());
  }

  /**
   * Subscribes to a channel. onMessage(msg) gets {channel, epoch, seq, time,
   * data}: data is a string, or a Uint8Array for a binary payload. With
   * since (and the epoch it belongs to), the server first replays retained
   * messages after it; since: 0 means everything still retained. A second
   * subscribe to the same channel shares the stream from where it is (its
   * since is ignored).
   */
  subscribe(channel, onMessage, { since, epoch, onGap } = {}) {
    if (typeof channel !== 'string' || channel === '') throw new TypeError('subscribe: channel must be a non-empty string');
    if (since !== undefined && since !== null && !(Number.isSafeInteger(since) && since >= 0)) {
      throw new TypeError('subscribe: since must be a sequence number (an integer >= 0)');
    }
    const sub = new Subscription(this, 'channel', channel, onMessage, onGap);
    let ch = this._channels.get(channel);
    if (!ch) {
      const position = since === undefined || since === null ? null : { epoch: epoch || 0, seq: since };
      ch = { position, subs: new Set() };
      this._channels.set(channel, ch);
      this._sendSubscribe(channel, ch);
    }
    ch.subs.add(sub);
    return sub;
  }

  /** Subscribes to every channel matching a Redis glob pattern, live. */
  psubscribe(pattern, onMessage) {
    if (typeof pattern !== 'string' || pattern === '') throw new TypeError('psubscribe: pattern must be a non-empty string');
    const sub = new Subscription(this, 'pattern', pattern, onMessage);
    let set = this._patterns.get(pattern);
    if (!set) {
      this._patterns.set(pattern, (set = new Set()));
      this._send({ op: 'subscribe', pattern });
    }
    set.add(sub);
    return sub;
  }

  /**
   * Publishes data (a string, or bytes: Uint8Array, ArrayBuffer) and
   * resolves with {channel, epoch, seq} once committed. The server must
   * allow browser publishing. Made while disconnected, it is sent once
   * connected. It rejects with a HeraldError: the server's (code
   * 'forbidden', 'unavailable', ...), or 'disconnected' when the connection
   * dropped before the answer: then the message may or may not have been
   * published, and it is not retried.
   */
  publish(channel, data) {
    const req = { op: 'publish', channel };
    if (typeof data === 'string') {
      req.data = data;
    } else if (data instanceof Uint8Array || data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
      req.data = encodeBase64(toBytes(data));
      req.base64 = true;
    } else {
      return Promise.reject(new TypeError('publish: data must be a string or bytes'));
    }
    return this._request(req, true).then((ev) => ({ channel: ev.channel, epoch: ev.epoch, seq: ev.seq }));
  }

  /**
   * Adds a listener: 'state' (state, info), 'gap' (gap), 'error' (err).
   * Returns a function that removes it.
   */
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    const set = this._listeners.get(event);
    if (set) set.delete(fn);
  }

  /** Drops the connection (if any) and connects again at once, resuming. */
  reconnect() {
    this._closed = false;
    this.attempt = 0;
    this._teardown();
    if (this.state !== 'closed') this._setState('closed', { code: 1000, reason: 'reconnect' });
    this._connect();
  }

  /**
   * Closes the connection and stops reconnecting. Requests not answered yet
   * are rejected. Subscriptions are kept: reconnect() resumes them.
   */
  close() {
    this._closed = true;
    this._teardown();
    for (const p of this._pending.values()) p.reject(new HeraldError('closed', 'the client was closed'));
    this._pending.clear();
    this._setState('closed', { code: 1000, reason: 'closed by the client' });
  }

  // --- connection ---------------------------------------------------------

  _connect() {
    if (this._closed || this._ws) return;
    clearTimeout(this._timers.retry);
    this._setState('connecting', { attempt: this.attempt });
    let ws;
    try {
      ws = new this.options.WebSocket(this.url);
    } catch (err) {
      this._emit('error', err);
      this._retry(1006, String(err));
      return;
    }
    this._ws = ws;
    // Events of a socket that is no longer current are ignored.
    ws.onopen = () => ws === this._ws && this._onOpen();
    ws.onmessage = (ev) => ws === this._ws && this._onFrame(ev.data);
    ws.onclose = (ev) => {
      if (ws !== this._ws) return;
      this._teardown();
      this._retry(ev.code, ev.reason);
    };
    ws.onerror = () => {}; // a close event follows
  }

  _onOpen() {
    const o = this.options;
    this._timers.stable = setTimeout(() => (this.attempt = 0), o.stableAfter);
    this._timers.ping = setInterval(() => this._ping(), o.pingInterval);
    this._setState('open', {});
    // Resubscribe, channels from where they were, then send what waited.
    for (const [channel, ch] of this._channels) this._sendSubscribe(channel, ch);
    for (const pattern of this._patterns.keys()) this._send({ op: 'subscribe', pattern });
    for (const p of this._pending.values()) {
      if (!p.sent) this._transmit(p);
    }
  }

  // _teardown forgets the current socket: closes it, stops its timers, and
  // fails the requests sent on it (their outcome is unknown).
  _teardown() {
    const ws = this._ws;
    this._ws = null;
    clearTimeout(this._timers.stable);
    clearInterval(this._timers.ping);
    clearTimeout(this._timers.pong);
    clearTimeout(this._timers.retry);
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      try {
        ws.close(1000);
      } catch (_) {
        // already closing
      }
    }
    for (const [id, p] of this._pending) {
      if (!p.sent) continue;
      this._pending.delete(id);
      p.reject(new HeraldError('disconnected', 'connection lost before the server answered'));
    }
  }

  // _retry schedules the next connection attempt: exponential backoff with
  // full jitter, between minDelay and min(maxDelay, minDelay * 2^(n+1)).
  _retry(code, reason) {
    if (this._closed) return;
    const { minDelay, maxDelay } = this.options;
    const ceiling = Math.min(maxDelay, minDelay * 2 ** (this.attempt + 1));
    const delay = Math.round(minDelay + Math.random() * (ceiling - minDelay));
    this.attempt++;
    this._setState('closed', { code, reason, attempt: this.attempt, reconnectIn: delay });
    this._timers.retry = setTimeout(() => this._connect(), delay);
  }

  // _ping checks that the server still answers; a connection whose pong does
  // not come back in time is dropped (a sleeping laptop, a dead NAT entry).
  _ping() {
    const ws = this._ws;
    this._timers.pong = setTimeout(() => {
      if (ws !== this._ws) return;
      this._teardown();
      this._retry(4408, 'no pong from the server');
    }, this.options.pongTimeout);
    this._request({ op: 'ping' }, false).then(
      () => clearTimeout(this._timers.pong),
      () => {},
    );
  }

  _setState(state, info) {
    this.state = state;
    this._emit('state', state, info);
  }

  // --- requests -----------------------------------------------------------

  _sendSubscribe(channel, ch) {
    const req = { op: 'subscribe', channel };
    if (ch.position) {
      req.since = ch.position.seq;
      if (ch.position.epoch) req.epoch = ch.position.epoch;
    }
    this._send(req);
  }

  // _send sends a request now if connected; subscriptions are sent again on
  // every open anyway.
  _send(req) {
    if (this._ws && this._ws.readyState === 1) this._ws.send(JSON.stringify(req));
  }

  // _request sends a request with an id and resolves with the server's
  // answer. Unless queue is set, it fails at once while disconnected.
  _request(req, queue) {
    return new Promise((resolve, reject) => {
      const p = { req: { id: this._nextID++, ...req }, resolve, reject, sent: false };
      const open = this._ws && this._ws.readyState === 1;
      if (!open && this._closed) return reject(new HeraldError('closed', 'the client was closed'));
      if (!open && !queue) return reject(new HeraldError('disconnected', 'not connected'));
      this._pending.set(p.req.id, p);
      if (open) this._transmit(p);
    });
  }

  _transmit(p) {
    p.sent = true;
    this._ws.send(JSON.stringify(p.req));
  }

  _remove(sub) {
    if (sub.kind === 'channel') {
      const ch = this._channels.get(sub.name);
      if (!ch || !ch.subs.delete(sub) || ch.subs.size > 0) return;
      this._channels.delete(sub.name);
      this._send({ op: 'unsubscribe', channel: sub.name });
    } else {
      const set = this._patterns.get(sub.name);
      if (!set || !set.delete(sub) || set.size > 0) return;
      this._patterns.delete(sub.name);
      this._send({ op: 'unsubscribe', pattern: sub.name });
    }
  }

  // --- events from the server ---------------------------------------------

  _onFrame(data) {
    if (typeof data !== 'string') return; // the server sends text only
    for (const line of data.split('\n')) {
      if (line === '') continue;
      let ev;
      try {
        ev = JSON.parse(line);
      } catch (err) {
        this._emit('error', new HeraldError('bad_event', 'unparsable event from the server: ' + line.slice(0, 100)));
        continue;
      }
      this._onEvent(ev);
    }
  }

  _onEvent(ev) {
    const p = ev.id !== undefined && this._pending.get(ev.id);
    switch (ev.type) {
      case 'message':
        return this._onMessage(ev);
      case 'resume':
        return this._onResume(ev);
      case 'error':
        if (p) {
          this._pending.delete(ev.id);
          return p.reject(new HeraldError(ev.code, ev.message));
        }
        return this._emit('error', new HeraldError(ev.code, ev.message));
      default: // subscribed, unsubscribed, published, pong
        if (p) {
          this._pending.delete(ev.id);
          p.resolve(ev);
        }
    }
  }

  _onMessage(ev) {
    const msg = { channel: ev.channel, epoch: ev.epoch, seq: ev.seq, time: ev.time, data: ev.base64 ? decodeBase64(ev.data) : ev.data };
    if (ev.pattern !== undefined) {
      msg.pattern = ev.pattern;
      for (const sub of this._patterns.get(ev.pattern) || []) call(sub._onMessage, msg);
      return;
    }
    const ch = this._channels.get(ev.channel);
    if (!ch) return; // unsubscribed meanwhile
    const pos = ch.position;
    // The server never repeats a message; this is a safety net.
    if (pos && pos.epoch === ev.epoch && ev.seq <= pos.seq) return;
    ch.position = { epoch: ev.epoch, seq: ev.seq };
    for (const sub of [...ch.subs]) if (sub.active) call(sub._onMessage, msg);
  }

  // _onResume handles the server's word on how a resumed stream continues:
  // from `from` in `epoch`; recovered false means messages were missed.
  _onResume(ev) {
    const ch = this._channels.get(ev.channel);
    if (!ch) return;
    const pos = ch.position;
    // The stream continues after from-1; never move back within an epoch.
    if (!(pos && pos.epoch === ev.epoch && pos.seq >= ev.from - 1)) {
      ch.position = { epoch: ev.epoch, seq: Math.max(0, ev.from - 1) };
    }
    if (ev.recovered) return;
    const gap = { channel: ev.channel, recovered: false, epoch: ev.epoch, from: ev.from, last: ev.last };
    for (const sub of [...ch.subs]) if (sub.active && sub._onGap) call(sub._onGap, gap);
    this._emit('gap', gap);
  }

  _emit(event, ...args) {
    for (const fn of [...(this._listeners.get(event) || [])]) call(fn, ...args);
  }
}

// call runs a user callback; an exception is reported, not propagated, so
// one bad callback does not stop delivery to the others.
function call(fn, ...args) {
  try {
    fn(...args);
  } catch (err) {
    (globalThis.reportError || console.error)(err);
  }
}

// wsURL resolves a URL or path against the page, with a ws: or wss: scheme.
function wsURL(url) {
  const base = globalThis.location ? globalThis.location.href : undefined;
  const u = new URL(url, base);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  return u.href;
}

function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

function encodeBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function decodeBase64(s) {
  const bin = atob(s);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

if (typeof window !== 'undefined') window.Herald = Herald;

export default Herald;
