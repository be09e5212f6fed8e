// Reconnect delays: grow exponentially, never exceed the cap, and are spread by jitter.

import assert from "node:assert/strict";
import { test } from "node:test";

import { backoffDelay, DEFAULT_BACKOFF } from "../src/backoff.ts";

const options = { initialMs: 500, maxMs: 15_000, factor: 2, jitter: 0.5 };

test("without jitter the delay doubles up to the cap", () => {
  const noJitter = { ...options, jitter: 0 };
  const delays = [0, 1, 2, 3, 4, 5, 6, 50].map((attempt) => backoffDelay(attempt, noJitter));
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 15_000, 15_000, 15_000]);
});

test("jitter draws from [delay * (1 - jitter), delay]", () => {
  assert.equal(backoffDelay(3, options, () => 0), 4000);
  assert.equal(backoffDelay(3, options, () => 1), 2000);
  assert.equal(backoffDelay(3, options, () => 0.5), 3000);
});

test("the cap holds whatever the attempt count", () => {
  for (let attempt = 0; attempt < 1000; attempt += 1) {
    const delay = backoffDelay(attempt, DEFAULT_BACKOFF);
    assert.ok(delay <= DEFAULT_BACKOFF.maxMs, `attempt ${attempt}: ${delay}`);
    assert.ok(delay >= 0);
  }
});
