/**
 * HTTP/1.1 by hand over a TCP socket, for what `fetch` will not send: a forged `Host` header, a body cut
 * short, a body that never finishes. Every read is bounded in time.
 * @module
 */

/** A parsed response. */
export type RawResponse = {
  status: number;
  headers: Headers;
  body: string;
  /** The body as JSON (null when it is not). */
  json: unknown;
};

const encoder = new TextEncoder();

/** A request's head: request line, headers, blank line. `Host` is not added: give it in `headers`. */
export function head(method: string, path: string, headers: Record<string, string | number>): string {
  const lines = [`${method} ${path} HTTP/1.1`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  return lines.join("\r\n") + "\r\n\r\n";
}

/** Parses a whole response (headers and a Content-Length or chunked body). */
export function parseResponse(raw: string): RawResponse {
  const end = raw.indexOf("\r\n\r\n");
  if (end < 0) throw new Error(`no complete response head in ${JSON.stringify(raw.slice(0, 200))}`);
  const [statusLine, ...lines] = raw.slice(0, end).split("\r\n");
  const status = Number(statusLine.split(" ")[1]);
  const headers = new Headers();
  for (const l of lines) {
    const i = l.indexOf(":");
    headers.append(l.slice(0, i).trim(), l.slice(i + 1).trim());
  }
  let body = raw.slice(end + 4);
  if (headers.get("transfer-encoding")?.includes("chunked")) {
    let out = "", at = 0;
    for (;;) {
      const nl = body.indexOf("\r\n", at);
      if (nl < 0) break;
      const size = parseInt(body.slice(at, nl), 16);
      if (!size) break;
      out += body.slice(nl + 2, nl + 2 + size);
      at = nl + 2 + size + 2;
    }
    body = out;
  }
  let json: unknown = null;
  try {
    json = JSON.parse(body);
  } catch { /* not JSON */ }
  return { status, headers, body, json };
}

/** An open connection to the server. */
export class RawConnection {
  #buffer = "";
  readonly #decoder = new TextDecoder();
  private constructor(readonly conn: Deno.TcpConn) {}

  static async open(port: number): Promise<RawConnection> {
    return new RawConnection(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  async write(text: string): Promise<void> {
    const bytes = encoder.encode(text);
    for (let at = 0; at < bytes.length;) at += await this.conn.write(bytes.subarray(at));
  }

  /** Ends the request's sending side (the server sees the body end). */
  async closeWrite(): Promise<void> {
    await this.conn.closeWrite();
  }

  /**
   * Reads until `done(text so far)` or the server closes; throws after `timeoutMs`. Returns everything
   * read, and whether the server closed the connection.
   */
  async readUntil(
    done: (text: string) => boolean,
    timeoutMs = 5000,
  ): Promise<{ text: string; closed: boolean }> {
    const deadline = Date.now() + timeoutMs;
    const buf = new Uint8Array(64 * 1024);
    while (!done(this.#buffer)) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`no answer within ${timeoutMs} ms (got ${JSON.stringify(this.#buffer)})`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const n = await Promise.race([
        this.conn.read(buf).catch(() => null),
        new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), left)),
      ]);
      clearTimeout(timer);
      if (n === "timeout") continue;
      if (n === null) return { text: this.#buffer, closed: true };
      this.#buffer += this.#decoder.decode(buf.subarray(0, n), { stream: true });
    }
    return { text: this.#buffer, closed: false };
  }

  /** Reads one whole response (the server closing the connection ends it too). */
  async response(timeoutMs = 5000): Promise<RawResponse> {
    const { text } = await this.readUntil((t) => complete(t), timeoutMs);
    return parseResponse(text);
  }

  close(): void {
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }
}

/** Whether `raw` holds a whole response. */
function complete(raw: string): boolean {
  const end = raw.indexOf("\r\n\r\n");
  if (end < 0) return false;
  const h = raw.slice(0, end).toLowerCase();
  const len = /\r\ncontent-length:\s*(\d+)/.exec(h);
  if (len) return encoder.encode(raw.slice(end + 4)).length >= Number(len[1]);
  if (h.includes("transfer-encoding: chunked")) return raw.endsWith("0\r\n\r\n");
  return false;
}

/** One request on its own connection (`Connection: close`), answered whole. */
export async function rawRequest(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string | number>,
  body = "",
): Promise<RawResponse> {
  const c = await RawConnection.open(port);
  try {
    const all = { ...headers, ...(body ? { "content-length": encoder.encode(body).length } : {}) };
    await c.write(head(method, path, { connection: "close", ...all }) + body);
    return await c.response();
  } finally {
    c.close();
  }
}
