/**
 * The pieces behind the access rules, without a server: which Host headers are answered (ports, IPv6,
 * `--allowed-hosts`), how folders are named in responses (relative inside the cwd, base name outside,
 * absolute paths scrubbed out of messages), and which Content-Types count as JSON.
 */
import assert from "node:assert/strict";
import { HostPolicy, splitHost } from "../../lib/serve/middleware/host_check.ts";
import { isJsonType } from "../../lib/serve/middleware/read_body.ts";
import { pathView } from "../../lib/serve/paths.ts";

Deno.test("Host headers: the bound address and loopback names on the server's port; --allowed-hosts", () => {
  assert.deepEqual(splitHost("LocalHost.:8000"), ["localhost", 8000]);
  assert.deepEqual(splitHost("[::1]:8000"), ["::1", 8000]);
  assert.deepEqual(splitHost("[::1]"), ["::1", null]);
  assert.deepEqual(splitHost("fe80::1"), ["fe80::1", null]);
  for (const bad of ["[::1", "a:b", "[::1]x", ":80", "a:123456"]) assert.equal(splitHost(bad), null, bad);

  const p = new HostPolicy("192.168.1.5");
  p.port = 8000;
  for (const ok of ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "192.168.1.5:8000", undefined]) {
    assert.ok(p.allows(ok), String(ok));
  }
  for (
    const no of ["evil.example:8000", "127.0.0.1:8001", "127.0.0.1", "127.0.0.1.evil.example:8000", "[::1"]
  ) {
    assert.ok(!p.allows(no), no);
  }
  const on80 = new HostPolicy("127.0.0.1");
  on80.port = 80;
  assert.ok(on80.allows("localhost"), "no port means 80");

  const wide = new HostPolicy("127.0.0.1", ["models.lan", "proxy.example:443"]);
  wide.port = 8000;
  assert.ok(wide.allows("models.lan:1234") && wide.allows("models.lan"));
  assert.ok(wide.allows("proxy.example:443") && !wide.allows("proxy.example:8000"));
  assert.ok(new HostPolicy("127.0.0.1", ["*"]).allows("anything.example:1"));
  assert.throws(() => new HostPolicy("127.0.0.1", ["a:b"]), /--allowed-hosts/);
});

Deno.test("paths: relative inside the cwd, base names outside, scrubbed out of messages", () => {
  const v = pathView(false, ["/srv/models/run-1/policy"], "/home/me/project");
  assert.equal(v.show("/home/me/project/runs/demo-1"), "runs/demo-1");
  assert.equal(v.show("/home/me/project"), ".");
  assert.equal(v.show("/srv/models/base"), "base");
  assert.equal(v.showOrNull(null), null);
  assert.deepEqual(v.redact({ model: "/srv/models/base", k: 4, files: ["/tmp/x/data.jsonl", "rel/x"] }), {
    model: "base",
    k: 4,
    files: ["data.jsonl", "rel/x"],
  });
  assert.equal(
    v.scrub(
      "loading /srv/models/run-1/policy/onnx/model.onnx failed; see /tmp/g-1/policy.onnx, POST /v1/chat/completions",
    ),
    "loading policy/onnx/model.onnx failed; see …/policy.onnx, POST /v1/chat/completions",
  );
  const raw = pathView(true, [], "/home/me/project");
  assert.equal(raw.show("/srv/models/base"), "/srv/models/base");
  assert.equal(raw.scrub("/srv/a/b"), "/srv/a/b");
});

Deno.test("JSON Content-Types", () => {
  for (const t of ["application/json", "Application/JSON; charset=utf-8", "application/vnd.api+json"]) {
    assert.ok(isJsonType(t), t);
  }
  for (
    const t of [undefined, "", "text/plain", "text/plain;charset=UTF-8", "multipart/form-data", "text/json"]
  ) {
    assert.ok(!isJsonType(t), String(t));
  }
});
