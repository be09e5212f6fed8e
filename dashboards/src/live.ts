// The /ws/live connection: opens same-origin, hands every parsed event to the page, and reconnects
// with capped exponential backoff + jitter. The server's first message on each connection is a
// snapshot, so a reconnect resynchronises the whole screen without any bookkeeping here.

import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff";
import type { LiveEvent } from "./types";

export type ConnectionState = "connecting" | "live" | "reconnecting";

export interface LiveOptions {
  url: string;
  onEvent: (event: LiveEvent) => void;
  onState: (state: ConnectionState, retryInMs?: number) => void;
  backoff?: BackoffOptions;
  /** A connection that has not opened within this time is abandoned and retried. */
  connectTimeoutMs?: number;
}

/** ws(s)://{host}/ws/live for the page's own origin. */
export function liveUrl(location: Location): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws/live`;
}

export class LiveConnection {
  private socket: WebSocket | null = null;
  private attempt = 0;
  private retryTimer: number | undefined;
  private connectTimer: number | undefined;
  private stopped = false;

  constructor(private readonly options: LiveOptions) {}

  start(): void {
    this.stopped = false;
    this.open();
  }

  stop(): void {
    this.stopped = true;
    window.clearTimeout(this.retryTimer);
    window.clearTimeout(this.connectTimer);
    this.socket?.close();
    this.socket = null;
  }

  private open(): void {
    this.options.onState(this.attempt === 0 ? "connecting" : "reconnecting");
    let socket: WebSocket;
    try {
      socket = new WebSocket(this.options.url);
    } catch (error) {
      console.warn("taktline: websocket could not be created", error);
      this.scheduleRetry();
      return;
    }
    this.socket = socket;
    this.connectTimer = window.setTimeout(() => {
      if (socket.readyState === WebSocket.CONNECTING) socket.close();
    }, this.options.connectTimeoutMs ?? 10_000);

    socket.addEventListener("open", () => {
      window.clearTimeout(this.connectTimer);
    });
    socket.addEventListener("message", (message: MessageEvent) => {
      const event = parseEvent(message.data);
      if (event === null) return;
      if (event.type === "snapshot") {
        // Only a snapshot proves the feed works end to end: reset the backoff there, so a
        // server that accepts and immediately drops connections still gets backed off.
        this.attempt = 0;
        this.options.onState("live");
      }
      this.options.onEvent(event);
    });
    socket.addEventListener("close", () => {
      window.clearTimeout(this.connectTimer);
      if (this.socket === socket) this.socket = null;
      if (!this.stopped) this.scheduleRetry();
    });
    // "error" is always followed by "close", which does the retry.
  }

  private scheduleRetry(): void {
    const delay = backoffDelay(this.attempt, this.options.backoff ?? DEFAULT_BACKOFF);
    this.attempt += 1;
    this.options.onState("reconnecting", delay);
    window.clearTimeout(this.retryTimer);
    this.retryTimer = window.setTimeout(() => this.open(), delay);
  }
}

const KNOWN_TYPES = new Set([
  "snapshot",
  "machine.updated",
  "work_order.updated",
  "stock.updated",
  "promise.changed",
  "sales_order.updated",
  "node.updated",
  "posting",
  "mrp.progress",
  "mrp.run.finished",
  "reservation.created",
  "reservation.released",
  "reservation.consumed",
]);

/** Parse one websocket message; unknown or malformed messages are logged and ignored. */
export function parseEvent(raw: unknown): LiveEvent | null {
  if (typeof raw !== "string") return null;
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    console.warn("taktline: ignoring a live message that is not JSON");
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const { type, data } = value as { type?: unknown; data?: unknown };
  if (typeof type !== "string" || typeof data !== "object" || data === null) return null;
  if (!KNOWN_TYPES.has(type)) return null;
  return value as LiveEvent;
}
