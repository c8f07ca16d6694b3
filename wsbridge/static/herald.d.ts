// Type declarations for herald.js, Herald's browser client.

/** A message delivered to a subscription. */
export interface Message {
  channel: string;
  /** The channel's epoch: changes only when its history is reset. */
  epoch: number;
  /** Sequence number in the channel: 1, 2, 3, ... within an epoch. */
  seq: number;
  /** When the leader committed it, Unix milliseconds. */
  time: number;
  /** Text payloads as a string; a payload that is not UTF-8 as bytes. */
  data: string | Uint8Array;
  /** The pattern that matched, for psubscribe deliveries. */
  pattern?: string;
}

/** A channel position: the last message delivered. */
export interface Position {
  epoch: number;
  seq: number;
}

/**
 * History could not be recovered: the server's resume event with
 * recovered false. Messages before `from` (in `epoch`) were missed: the
 * channel's retained history no longer reached back far enough, or the
 * channel was reset and `epoch` is new.
 */
export interface Gap {
  channel: string;
  recovered: false;
  epoch: number;
  /** The first sequence number that follows. */
  from: number;
  /** The channel's last sequence number when the server answered. */
  last: number;
}

export type State = 'connecting' | 'open' | 'closed';

export interface StateInfo {
  /** The number of this attempt (connecting) or of attempts so far (closed). */
  attempt?: number;
  /** The WebSocket close code (closed). 4408: no pong from the server. */
  code?: number;
  reason?: string;
  /** Milliseconds until the next attempt; absent once close() was called. */
  reconnectIn?: number;
}

export interface Published {
  channel: string;
  epoch: number;
  seq: number;
}

export interface SubscribeOptions {
  /** Replay retained messages after this sequence number first; 0: all retained. */
  since?: number;
  /** The epoch `since` belongs to; a different current epoch is reported as a gap. */
  epoch?: number;
  /** Called when history could not be recovered for this channel. */
  onGap?: (gap: Gap) => void;
}

export interface HeraldOptions {
  /** First reconnect delay and floor of every delay, ms. Default 250. */
  minDelay?: number;
  /** Ceiling of the reconnect delay, ms. Default 30000. */
  maxDelay?: number;
  /** A connection open this long resets the backoff, ms. Default 10000. */
  stableAfter?: number;
  /** How often the client pings the server, ms. Default 25000. */
  pingInterval?: number;
  /** A pong later than this drops the connection, ms. Default 10000. */
  pongTimeout?: number;
  /** The WebSocket constructor. Default globalThis.WebSocket. */
  WebSocket?: typeof WebSocket;
}

/** An error answered by the server, or a local one ('disconnected', 'closed'). */
export class HeraldError extends Error {
  /** forbidden, bad_request, unavailable, timeout, too_large, internal, disconnected, closed */
  code: string;
  constructor(code: string, message: string);
}

export interface Subscription {
  readonly kind: 'channel' | 'pattern';
  readonly name: string;
  readonly active: boolean;
  /** The channel's last delivered position, or null (patterns: always null). */
  readonly position: Position | null;
  /** Stops delivery to this subscription. Idempotent. */
  unsubscribe(): void;
}

export class Herald {
  /** @param url ws://, wss://, http(s):// or a path. Default ws(s)://<location.host>/ws. */
  constructor(url?: string, options?: HeraldOptions);
  constructor(options: HeraldOptions);

  readonly url: string;
  readonly state: State;
  /** Reconnect attempts since the last stable connection. */
  readonly attempt: number;

  subscribe(channel: string, onMessage: (msg: Message) => void, options?: SubscribeOptions): Subscription;
  psubscribe(pattern: string, onMessage: (msg: Message) => void): Subscription;
  /** Needs a server started with --allow-browser-publish; else rejects with code 'forbidden'. */
  publish(channel: string, data: string | Uint8Array | ArrayBuffer | ArrayBufferView): Promise<Published>;

  on(event: 'state', fn: (state: State, info: StateInfo) => void): () => void;
  on(event: 'gap', fn: (gap: Gap) => void): () => void;
  on(event: 'error', fn: (err: Error) => void): () => void;
  off(event: 'state' | 'gap' | 'error', fn: (...args: any[]) => void): void;

  /** Drops the connection (if any) and connects again at once, resuming. Also reopens after close(). */
  reconnect(): void;
  /** Closes and stops reconnecting; subscriptions are kept for reconnect(). */
  close(): void;
}

export default Herald;

declare global {
  interface Window {
    Herald: typeof Herald;
  }
}
