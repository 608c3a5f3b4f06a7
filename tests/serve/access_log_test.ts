/**
 * The access log against log injection (issue 20, item 7): the path is percent-decoded, so `%0a`, ESC
 * sequences, NUL, C1 controls and U+2028/U+2029 would forge lines, drive the terminal or break grep. Every
 * request is one log line of printable text, with each such character written as `\xHH` / `\uHHHH` and a
 * backslash as `\\`, so the escapes are unambiguous. Checked on the escaping function and on a real server
 * of 127.0.0.1 fed raw requests.
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import { ApiError } from "../../lib/serve/errors.ts";
import { escapeLogText } from "../../lib/serve/middleware/access_log.ts";
import { onError } from "../../lib/serve/middleware/errors.ts";
import { buildFixture, serve } from "./_fixture.ts";
import { rawRequest } from "./_raw_http.ts";

/** Whether `line` holds only printable text (no C0, DEL, C1, line/paragraph separators, bidi controls). */
function printable(line: string): boolean {
  // deno-lint-ignore no-control-regex
  return !/[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/.test(line);
}

Deno.test("escapeLogText: controls, DEL, C1, U+2028/2029, bidi controls and the backslash escaped", () => {
  assert.equal(escapeLogText("/v1/models"), "/v1/models");
  assert.equal(escapeLogText("/a\nGET /forged 200 1 ms"), "/a\\x0aGET /forged 200 1 ms");
  assert.equal(escapeLogText("\r\t\0\x1b[2J\x7f"), "\\x0d\\x09\\x00\\x1b[2J\\x7f");
  assert.equal(escapeLogText("\x85\x9f\xa0é"), "\\x85\\x9f\xa0é");
  assert.equal(escapeLogText("a\u2028b\u2029c\u202ed\u2066"), "a\\u2028b\\u2029c\\u202ed\\u2066");
  // a backslash is doubled, so a literal "\x0a" in a path cannot pass for an escaped newline
  assert.equal(escapeLogText("\\x0a"), "\\\\x0a");
  assert.equal(escapeLogText("\n"), "\\x0a");
  assert.notEqual(escapeLogText("\\x0a"), escapeLogText("\n"));
  // other text is kept as it is
  for (const s of ["/日本語/😀", "ünïcödé", "a b~!@#$%^&*()[]{}"]) assert.equal(escapeLogText(s), s);
  for (let c = 0; c <= 0xffff; c++) {
    const e = escapeLogText(String.fromCharCode(c));
    assert.ok(printable(e) && !e.includes("\n"), `U+${c.toString(16)}`);
  }
});

Deno.test({
  name: "access log on a real server: one printable line per request, whatever the path",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const fx = await buildFixture();
    const lines: string[] = [];
    const server = await serve({ model: fx.runDir, log: (l) => lines.push(l) });
    try {
      const host = { host: `127.0.0.1:${server.port}` };
      const paths: [string, string][] = [
        ["/x%0aGET%20/v1/models%20200%201%20ms", "/x\\x0aGET /v1/models 200 1 ms"],
        ["/x%0d%0a%1b%5B2J%00%07", "/x\\x0d\\x0a\\x1b[2J\\x00\\x07"],
        ["/x%C2%85%E2%80%A8%E2%80%A9%E2%80%AE", "/x\\x85\\u2028\\u2029\\u202e"],
        ["/x%5Cx0a%7F", "/x\\\\x0a\\x7f"],
      ];
      for (const [raw, logged] of paths) {
        const before = lines.length;
        const res = await rawRequest(server.port, "GET", raw, host);
        assert.equal(res.status, 404, raw);
        // the log line is written once the response has gone out
        for (let i = 0; i < 50 && lines.length === before; i++) await new Promise((r) => setTimeout(r, 10));
        const added = lines.slice(before);
        assert.equal(added.length, 1, JSON.stringify(added));
        const line = added[0];
        assert.ok(!line.includes("\n") && printable(line), JSON.stringify(line));
        assert.match(line, /^GET \S.* 404 \d+ ms$/);
        assert.equal(line.replace(/ 404 \d+ ms$/, ""), `GET ${logged}`);
      }
      const ok = await rawRequest(server.port, "GET", "/health", host);
      assert.equal(ok.status, 200);
    } finally {
      await server.close();
      await fx.cleanup();
    }
  },
});

Deno.test("the error log escapes the request's method, path and a 5xx message too", async () => {
  const lines: string[] = [];
  const app = new Hono();
  app.get("*", (c) => {
    if (c.req.path.includes("boom")) throw new Error("boom");
    throw new ApiError(503, `model busy for ${c.req.path}`, "server_error");
  });
  app.onError(onError((l) => lines.push(l)));
  await app.request("http://x/boom%0aGET%20/forged");
  await app.request("http://x/busy%1b%5B2J");
  assert.equal(lines.length, 2);
  assert.match(lines[0], /^error in GET \/boom\\x0aGET \/forged: Error: boom/);
  assert.equal(lines[1], "503 in GET /busy\\x1b[2J: model busy for /busy\\x1b[2J");
  assert.ok(printable(lines[1]));
});
