// REST calls of the supervisor page. A 4xx/5xx answer becomes an ApiError carrying the cloud's
// `detail` text, so the page can say what was refused and why (not just "HTTP 409").

const TIMEOUT_MS = 10_000;

/** A refused or failed request: HTTP status and the cloud's explanation. */
export class ApiError extends Error {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly status: number,
    readonly detail: string,
  ) {
    super(`${method} ${path}: HTTP ${status} ${detail}`);
    this.name = "ApiError";
  }
}

/** The cloud's `detail`: a string, or FastAPI's list of validation errors. */
export function detailOf(body: unknown): string {
  if (typeof body !== "object" || body === null || !("detail" in body)) return "";
  const detail = (body as { detail: unknown }).detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((entry) =>
        typeof entry === "object" && entry !== null && "msg" in entry
          ? String((entry as { msg: unknown }).msg)
          : JSON.stringify(entry),
      )
      .join("; ");
  }
  return JSON.stringify(detail);
}

async function call<T>(
  method: "GET" | "POST" | "PATCH",
  path: string,
  body?: unknown,
  caller: Record<string, string> = {},
): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json", ...caller };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? null : JSON.stringify(body),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  const text = await response.text();
  let answer: unknown = null;
  try {
    answer = text === "" ? null : JSON.parse(text);
  } catch {
    answer = null;
  }
  if (!response.ok) throw new ApiError(method, path, response.status, detailOf(answer) || text);
  return answer as T;
}

export const getJson = <T>(path: string): Promise<T> => call<T>("GET", path);
export const postJson = <T>(path: string, body?: unknown): Promise<T> =>
  call<T>("POST", path, body);
export const patchJson = <T>(path: string, body: unknown): Promise<T> =>
  call<T>("PATCH", path, body);

/** The message to show for any failure (an ApiError names status and reason). */
export function describe(error: unknown): string {
  if (error instanceof ApiError) return `${error.status}: ${error.detail || error.message}`;
  if (error instanceof Error) return error.message;
  return String(error);
}

/** POST a JSON body as a named user (`X-Taktline-User`, a stand-in for real authentication). */
export const postJsonAs = <T>(path: string, body: unknown, user: string): Promise<T> =>
  call<T>("POST", path, body, { "X-Taktline-User": user });

// --- the supplier portal (#/supplier) ------------------------------------------------------------

/** The header that makes a request a supplier's (a STAND-IN for real authentication). */
export const SUPPLIER_HEADER = "X-Taktline-Supplier";

/** GET as a supplier (`X-Taktline-Supplier`). */
export const getJsonAsSupplier = <T>(path: string, supplier: string): Promise<T> =>
  call<T>("GET", path, undefined, { [SUPPLIER_HEADER]: supplier });

/** POST a JSON body as a supplier (`X-Taktline-Supplier`). */
export const postJsonAsSupplier = <T>(path: string, body: unknown, supplier: string): Promise<T> =>
  call<T>("POST", path, body, { [SUPPLIER_HEADER]: supplier });
