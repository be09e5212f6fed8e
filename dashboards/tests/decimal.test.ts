// Exact display of the cloud's decimal strings: no float on the way, thousands separators.

import assert from "node:assert/strict";
import { test } from "node:test";

import { formatDecimal, shiftDecimal, subtractDecimals, toNumber } from "../src/decimal.ts";

test("counts get thousands separators and keep every digit", () => {
  assert.equal(formatDecimal("0"), "0");
  assert.equal(formatDecimal("123"), "123");
  assert.equal(formatDecimal("1234"), "1,234");
  assert.equal(formatDecimal("25000"), "25,000");
  assert.equal(formatDecimal("9007199254740993"), "9,007,199,254,740,993");
  assert.equal(formatDecimal("-1234567"), "-1,234,567");
});

test("fractions are shown as sent, not through a float", () => {
  assert.equal(formatDecimal("14852.5"), "14,852.5");
  assert.equal(formatDecimal("0.1"), "0.1");
  assert.equal(formatDecimal("62.10"), "62.10");
  assert.equal(formatDecimal("1234567.000000000000000001"), "1,234,567.000000000000000001");
});

test("rounding is half away from zero on the digits", () => {
  assert.equal(formatDecimal("2100.5", { maxFraction: 0 }), "2,101");
  assert.equal(formatDecimal("2100.49", { maxFraction: 0 }), "2,100");
  assert.equal(formatDecimal("9999.96", { maxFraction: 1 }), "10,000.0");
  assert.equal(formatDecimal("-0.05", { maxFraction: 1 }), "-0.1");
  assert.equal(formatDecimal("-0.04", { maxFraction: 1 }), "0.0");
  assert.equal(formatDecimal("62.1", { maxFraction: 1 }), "62.1");
  // 1.005 is 1.00499999... as a float; on the digits it rounds up.
  assert.equal(formatDecimal("1.005", { maxFraction: 2 }), "1.01");
});

test("shifting the point turns a ratio into a percentage and ms into seconds", () => {
  assert.equal(formatDecimal("0.057", { shift: 2, maxFraction: 1, minFraction: 1 }), "5.7");
  assert.equal(formatDecimal("0", { shift: 2, maxFraction: 1, minFraction: 1 }), "0.0");
  assert.equal(formatDecimal("1", { shift: 2, maxFraction: 1, minFraction: 1 }), "100.0");
  assert.equal(formatDecimal("0.12345", { shift: 2, maxFraction: 1 }), "12.3");
  assert.equal(formatDecimal("1580", { shift: -3, maxFraction: 2 }), "1.58");
  assert.equal(formatDecimal("5", { shift: -3, maxFraction: 2 }), "0.01");
  assert.equal(shiftDecimal("0.057", 2), "5.7");
  assert.equal(shiftDecimal("12", -4), "0.0012");
});

test("Python Decimal exponent forms are understood", () => {
  assert.equal(formatDecimal("1E+3"), "1,000");
  assert.equal(formatDecimal("2.5E-3"), "0.0025");
  assert.equal(formatDecimal("0E-8"), "0.00000000");
});

test("missing or malformed values show a dash instead of NaN", () => {
  assert.equal(formatDecimal(null), "—");
  assert.equal(formatDecimal(undefined), "—");
  assert.equal(formatDecimal("abc"), "—");
  assert.equal(formatDecimal(""), "—");
  assert.equal(formatDecimal("1.2.3"), "—");
  assert.equal(toNumber("12.5"), 12.5);
  assert.equal(toNumber("NaN"), null);
  assert.equal(toNumber(null), null);
});

test("differences are exact", () => {
  assert.equal(subtractDecimals("14852.5", "14855"), "-2.5");
  assert.equal(subtractDecimals("0.3", "0.1"), "0.2");
  assert.equal(subtractDecimals("5941", "5941"), "0");
  assert.equal(subtractDecimals("100", "99.75"), "0.25");
  assert.equal(subtractDecimals("x", "1"), null);
});
