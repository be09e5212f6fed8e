// Capped exponential backoff with jitter for the websocket reconnect: many wall screens restarting
// together after a cloud restart must not reconnect in lock-step.

export interface BackoffOptions {
  /** First delay, ms. */
  initialMs: number;
  /** Upper bound of any delay, ms. */
  maxMs: number;
  /** Growth per failed attempt. */
  factor: number;
  /** Share of the delay that is random: 0.5 draws from [delay/2, delay]. */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = {
  initialMs: 500,
  maxMs: 15_000,
  factor: 2,
  jitter: 0.5,
};

/** Delay before reconnect attempt `attempt` (0-based), never above options.maxMs. */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const exponent = Math.min(Math.max(attempt, 0), 30);
  const capped = Math.min(options.maxMs, options.initialMs * options.factor ** exponent);
  const jitter = Math.min(Math.max(options.jitter, 0), 1);
  return Math.round(capped * (1 - jitter * random()));
}
