// The chat demo: one channel, chat:demo, through herald.js. The page
// connects to the node that served it, joins with the retained history
// (since 0), then stays live and resumes after every reconnect. Messages
// typed here are published over the WebSocket (or POST /publish) when the
// server allows browser publishing (--allow-browser-publish).

import { Herald } from './herald.js';

const CHANNEL = 'chat:demo';
const $ = (id) => document.getElementById(id);

// Resolved against the page, so a node mounted under a path prefix works too.
const herald = new Herald(new URL('ws', location.href).href);
// For the console and the browser tests.
const demo = { herald, gaps: [], opens: 0, lastSeq: null, epoch: null };
window.demo = demo;

// --- connection panel -------------------------------------------------------

const stateEl = $('state');
herald.on('state', (state, info) => {
  if (state === 'open') demo.opens++;
  stateEl.textContent = state;
  stateEl.dataset.state = state;
  stateEl.dataset.opens = String(demo.opens);
  $('opens').textContent = String(demo.opens);
  const attempts = $('attempts');
  attempts.dataset.n = String(herald.attempt);
  attempts.textContent = String(herald.attempt);
  if (state === 'closed' && info.reconnectIn !== undefined) {
    stateEl.textContent = `closed, retrying in ${(info.reconnectIn / 1000).toFixed(1)} s`;
  }
});
$('server').textContent = herald.url;
for (const el of document.querySelectorAll('.host')) el.textContent = location.host;
$('reconnect').addEventListener('click', () => herald.reconnect());

// --- messages ---------------------------------------------------------------

const list = $('messages');

function append(li) {
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

// A chat line is {"name": ..., "text": ...}; anything else (redis-cli
// PUBLISH chat:demo "hello") is shown as it is, from "backend".
function parse(data) {
  if (data instanceof Uint8Array) return { who: null, text: `(${data.length} bytes of binary data)` };
  if (data.startsWith('{')) {
    try {
      const v = JSON.parse(data);
      if (v && typeof v.text === 'string') return { who: String(v.name || 'anonymous'), text: v.text };
    } catch (_) {
      // not JSON: plain text
    }
  }
  return { who: null, text: data };
}

function onMessage(m) {
  demo.lastSeq = m.seq;
  demo.epoch = m.epoch;
  $('epoch').textContent = String(m.epoch);
  $('last-seq').textContent = String(m.seq);
  const { who, text } = parse(m.data);
  const li = el('li', 'msg');
  li.dataset.seq = String(m.seq);
  li.dataset.epoch = String(m.epoch);
  li.append(
    el('span', 'seq', '#' + m.seq),
    el('span', who === null ? 'who backend' : 'who', who === null ? 'backend' : who),
    el('span', 'text', text),
    el('time', '', new Date(m.time).toLocaleTimeString()),
  );
  append(li);
}

function onGap(g) {
  $('epoch').textContent = String(g.epoch);
  // Joining a room whose oldest messages are gone is not a loss: say so
  // quietly. Any other gap means messages were missed.
  if (demo.opens <= 1 && demo.lastSeq === null) {
    append(el('li', 'info', `Older messages are no longer retained; history starts at #${g.from}.`));
    return;
  }
  demo.gaps.push(g);
  let text;
  if (demo.epoch !== null && g.epoch !== demo.epoch) {
    text = `the channel was reset (epoch ${demo.epoch} → ${g.epoch}): messages after #${demo.lastSeq} of the old epoch were missed`;
  } else if (demo.lastSeq !== null && g.from - 1 > demo.lastSeq) {
    const [a, b] = [demo.lastSeq + 1, g.from - 1];
    text = (a === b ? `message #${a} was` : `messages #${a}–#${b} were`) + ' missed (no longer retained)';
  } else {
    text = `messages before #${g.from} were missed (no longer retained)`;
  }
  const li = el('li', 'gap', `History could not be recovered: ${text}.`);
  li.dataset.from = String(g.from);
  li.dataset.epoch = String(g.epoch);
  append(li);
  $('gap-none').hidden = true;
  $('gaps').append(el('li', '', `before #${g.from}, epoch ${g.epoch}, at ${new Date().toLocaleTimeString()}`));
}

herald.subscribe(CHANNEL, onMessage, { since: 0, onGap });

// --- sending ----------------------------------------------------------------

const nameEl = $('name');
nameEl.value = localStorage.getItem('herald-demo-name') || 'guest-' + Math.floor(100 + Math.random() * 900);
nameEl.addEventListener('change', () => localStorage.setItem('herald-demo-name', nameEl.value));

function setMode(mode) {
  $('pub-mode').textContent = { websocket: 'WebSocket', http: 'POST /publish', disabled: 'disabled on this server' }[mode];
  $('notice').hidden = mode !== 'disabled';
}

// publish tries the WebSocket first, then POST /publish (the same switch
// governs both, but a proxy in front may treat them differently).
async function publish(payload) {
  try {
    await herald.publish(CHANNEL, payload);
    return 'websocket';
  } catch (err) {
    if (err.code !== 'forbidden') throw err;
  }
  const res = await fetch(new URL('publish/' + CHANNEL, location.href), { method: 'POST', body: payload });
  if (res.status === 403) return 'disabled';
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    throw new Error(body.message || `POST /publish: HTTP ${res.status}`);
  }
  return 'http';
}

$('compose').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const textEl = $('text');
  const text = textEl.value.trim();
  if (!text) return;
  const errEl = $('send-error');
  errEl.hidden = true;
  $('send').disabled = true;
  try {
    const mode = await publish(JSON.stringify({ name: nameEl.value.trim() || 'anonymous', text }));
    setMode(mode);
    if (mode !== 'disabled') textEl.value = '';
  } catch (err) {
    // 'disconnected': the connection dropped before the answer; the
    // message may or may not have gone out, so it is not sent again.
    errEl.textContent = err.code === 'disconnected'
      ? 'The connection dropped before the server answered: the message may or may not have been sent.'
      : `Not sent: ${err.message}`;
    errEl.hidden = false;
  } finally {
    $('send').disabled = false;
    textEl.focus();
  }
});
