/**
 * The Host header must name this server. A web page on another site can make the browser send requests
 * to 127.0.0.1 (a form posted across sites), and with DNS rebinding (evil.example re-resolved to
 * 127.0.0.1) it can even read the answers: the browser still sends `Host: evil.example`. Answering only
 * Host names that the server is known by — the bound address, the loopback names, and what `--allowed-hosts`
 * adds — defeats that. Refused requests get 403 in OpenAI's error shape. A request without a Host header
 * (HTTP/1.0 tools) is no browser's and passes.
 * @module
 */
import type { MiddlewareHandler } from "hono";
import { ApiError } from "../errors.ts";

/** Names every server answers to on its own port. */
const LOOPBACK = ["localhost", "127.0.0.1", "::1"];
/** Bind addresses that mean "every interface". */
const WILDCARD = ["0.0.0.0", "::", ""];

/** `name[:port]` or `[v6][:port]` as `[name, port | null]` (lower case, no trailing dot), or null. */
export function splitHost(header: string): [string, number | null] | null {
  const h = header.trim().toLowerCase();
  let name: string, port: string | null = null;
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    if (end < 0) return null;
    name = h.slice(1, end);
    const rest = h.slice(end + 1);
    if (rest !== "") {
      if (!rest.startsWith(":")) return null;
      port = rest.slice(1);
    }
  } else if ((h.match(/:/g) ?? []).length > 1) {
    name = h; // a bare IPv6 address (only in --allowed-hosts)
  } else {
    const i = h.indexOf(":");
    name = i < 0 ? h : h.slice(0, i);
    if (i >= 0) port = h.slice(i + 1);
  }
  if (port !== null && !/^\d{1,5}$/.test(port)) return null;
  name = name.replace(/\.$/, "");
  if (name === "") return null;
  return [name, port === null ? null : Number(port)];
}

/** The addresses of this machine's interfaces (for a server bound to all of them), or none. */
function interfaceAddresses(): string[] {
  try {
    return Deno.networkInterfaces().map((i) => i.address.toLowerCase());
  } catch {
    return []; // no --allow-sys: the loopback names and --allowed-hosts still work
  }
}

/** Which Host headers the server answers. */
export class HostPolicy {
  /** The port the server listens on (set once it listens; a Host without a port means 80). */
  port = 0;
  readonly #any: boolean;
  /** Names accepted with the server's own port. */
  readonly #own = new Set<string>();
  /** `--allowed-hosts` names without a port: any port. */
  readonly #anyPort = new Set<string>();
  /** `--allowed-hosts` entries with a port: `name:port`. */
  readonly #exact = new Set<string>();

  /** `bindHost`: `--host`; `allowed`: `--allowed-hosts` entries ("*" accepts any Host). */
  constructor(bindHost: string, allowed: readonly string[] = []) {
    this.#any = allowed.includes("*");
    const bind = bindHost.replace(/^\[(.*)\]$/, "$1").toLowerCase();
    for (const n of LOOPBACK) this.#own.add(n);
    if (WILDCARD.includes(bind)) { for (const a of interfaceAddresses()) this.#own.add(a); }
    else this.#own.add(bind);
    for (const entry of allowed) {
      if (entry === "*") continue;
      const parsed = splitHost(entry);
      if (!parsed) throw new RangeError(`--allowed-hosts: "${entry}" is not a host name or host:port`);
      const [name, port] = parsed;
      if (port === null) this.#anyPort.add(name);
      else this.#exact.add(`${name}:${port}`);
    }
  }

  /** Whether a request with this Host header is answered. */
  allows(header: string | undefined): boolean {
    if (this.#any || header === undefined || header === "") return true;
    const parsed = splitHost(header);
    if (!parsed) return false;
    const [name, given] = parsed;
    const port = given ?? 80;
    return (this.#own.has(name) && port === this.port) || this.#anyPort.has(name) ||
      this.#exact.has(`${name}:${port}`);
  }
}

/** 403 for a Host header the policy refuses. */
export function hostCheck(policy: HostPolicy): MiddlewareHandler {
  return async (c, next) => {
    const host = c.req.header("host");
    if (!policy.allows(host)) {
      const shown = JSON.stringify((host ?? "").slice(0, 100));
      throw new ApiError(
        403,
        `this server does not answer to the Host ${shown}; start it with --allowed-hosts naming that host ` +
          "(a guard against DNS rebinding)",
        "invalid_request_error",
        null,
        "host_not_allowed",
      );
    }
    await next();
  };
}
