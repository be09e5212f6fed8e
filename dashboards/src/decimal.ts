// Exact formatting of the decimal strings the cloud sends. Quantities never pass through a float
// here: scaling and rounding work on the digits, so "25000" shows as "25,000" and "0.0575" as
// "5.75 %" exactly. Charts get a Number (toNumber) where a pixel is the only precision that counts.

/** A decimal as sign, integer digits and fraction digits (no exponent, no leading zeros). */
interface Digits {
  negative: boolean;
  integer: string;
  fraction: string;
}

const DECIMAL = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/;

/** Parse "1234.50", "-0.5", "1E+3" (Python Decimal str forms) into digits; null if invalid. */
function parse(text: string): Digits | null {
  const match = DECIMAL.exec(text.trim());
  if (match === null) return null;
  const [, sign = "", intPart = "", fracPart = "", exponentText] = match;
  if (intPart === "" && fracPart === "") return null;
  const digits = { negative: sign === "-", integer: intPart.replace(/^0+/, ""), fraction: fracPart };
  const exponent = exponentText === undefined ? 0 : Number.parseInt(exponentText, 10);
  return exponent === 0 ? digits : shift(digits, exponent);
}

/** Multiply by 10**places exactly (places may be negative): shift("0.057", 2) === "5.7". */
export function shiftDecimal(text: string, places: number): string | null {
  const digits = parse(text);
  if (digits === null) return null;
  return render(shift(digits, places));
}

function shift(digits: Digits, places: number): Digits {
  let { integer, fraction } = digits;
  if (places > 0) {
    fraction = fraction.padEnd(places, "0");
    integer += fraction.slice(0, places);
    fraction = fraction.slice(places);
  } else if (places < 0) {
    integer = integer.padStart(-places, "0");
    fraction = integer.slice(integer.length + places) + fraction;
    integer = integer.slice(0, integer.length + places);
  }
  return { negative: digits.negative, integer: integer.replace(/^0+/, ""), fraction };
}

/** Round half away from zero to `places` fraction digits, on the digits. */
function round(digits: Digits, places: number): Digits {
  if (digits.fraction.length <= places) return digits;
  const kept = digits.integer + digits.fraction.slice(0, places);
  const roundUp = (digits.fraction.charCodeAt(places) - 48) >= 5;
  let body = kept === "" ? "0" : kept;
  if (roundUp) body = incrementDigits(body);
  const integerLength = body.length - places;
  return {
    negative: digits.negative,
    integer: body.slice(0, integerLength).replace(/^0+/, ""),
    fraction: body.slice(integerLength),
  };
}

function incrementDigits(body: string): string {
  const chars = body.split("");
  for (let i = chars.length - 1; i >= 0; i -= 1) {
    if (chars[i] === "9") {
      chars[i] = "0";
    } else {
      chars[i] = String.fromCharCode((chars[i] ?? "0").charCodeAt(0) + 1);
      return chars.join("");
    }
  }
  return `1${chars.join("")}`;
}

function render(digits: Digits): string {
  const integer = digits.integer === "" ? "0" : digits.integer;
  const isZero = /^0*$/.test(integer + digits.fraction);
  const sign = digits.negative && !isZero ? "-" : "";
  return digits.fraction === "" ? `${sign}${integer}` : `${sign}${integer}.${digits.fraction}`;
}

function group(integer: string): string {
  return integer.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

export interface FormatOptions {
  /** Round to at most this many fraction digits (half away from zero). */
  maxFraction?: number;
  /** Pad to at least this many fraction digits. */
  minFraction?: number;
  /** Shift the decimal point first (2 turns a ratio into a percentage). */
  shift?: number;
}

/**
 * Format a decimal string for display with thousands separators, exactly.
 * Returns the fallback (an em dash) for null or text that is not a decimal.
 */
export function formatDecimal(
  text: string | null | undefined,
  options: FormatOptions = {},
  fallback = "—",
): string {
  if (text === null || text === undefined) return fallback;
  let digits = parse(text);
  if (digits === null) return fallback;
  if (options.shift !== undefined) digits = shift(digits, options.shift);
  if (options.maxFraction !== undefined) digits = round(digits, options.maxFraction);
  let fraction = digits.fraction;
  if (options.minFraction !== undefined) fraction = fraction.padEnd(options.minFraction, "0");
  const plain = render({ ...digits, fraction });
  const [integerPart = "0", fractionPart] = plain.replace("-", "").split(".");
  const sign = plain.startsWith("-") ? "-" : "";
  const grouped = group(integerPart);
  return fractionPart === undefined ? `${sign}${grouped}` : `${sign}${grouped}.${fractionPart}`;
}

/** Number for charts (pixels, gauge angle); NaN-safe: null/invalid become null. */
export function toNumber(text: string | null | undefined): number | null {
  if (text === null || text === undefined) return null;
  if (parse(text) === null) return null;
  const value = Number(text);
  return Number.isFinite(value) ? value : null;
}

/** Exact difference a - b of two decimal strings as a decimal string; null if one is invalid. */
export function subtractDecimals(a: string, b: string): string | null {
  const x = parse(a);
  const y = parse(b);
  if (x === null || y === null) return null;
  const scale = Math.max(x.fraction.length, y.fraction.length);
  const scaled = (d: Digits): bigint => {
    const magnitude = BigInt(`${d.integer}${d.fraction.padEnd(scale, "0")}` || "0");
    return d.negative ? -magnitude : magnitude;
  };
  const difference = scaled(x) - scaled(y);
  const negative = difference < 0n;
  const body = (negative ? -difference : difference).toString().padStart(scale + 1, "0");
  const integer = body.slice(0, body.length - scale);
  const fraction = body.slice(body.length - scale).replace(/0+$/, "");
  return render({ negative, integer: integer.replace(/^0+/, ""), fraction });
}
