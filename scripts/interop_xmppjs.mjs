// xmpp.js (@xmpp/client) against a running Oxpecker: SASL2 + Bind2 + FAST as an independent
// client, then client management through the manage-clients IQ and the admin REST API.
// Run by scripts/interop-xmppjs, which installs @xmpp/client and starts the server.
//
// Prints PASS/FAIL lines; the exit status is the number of failures (capped at 100).
//
// Environment: XMPP_PORT, HTTP_PORT, USER_PASSWORD (for alice@localhost), ADMIN_PASSWORD (for
// admin@localhost), TIMEOUT_MS, BENCH_LOGINS (logins per mechanism for the figure, 0 = none).

import { client, xml } from "@xmpp/client";

const PORT = process.env.XMPP_PORT;
const HTTP = `http://127.0.0.1:${process.env.HTTP_PORT}/admin_rest`;
const PASSWORD = process.env.USER_PASSWORD;
const ADMIN = "Basic " + Buffer.from(`admin@localhost:${process.env.ADMIN_PASSWORD}`).toString("base64");
const TIMEOUT = Number(process.env.TIMEOUT_MS || 20000);
const BENCH = Number(process.env.BENCH_LOGINS || 0);
const CLIENT_ID = "3f0f2d6e-9c1b-4d8e-a2f1-0b7c5e9d4a21";
const NS_CM = "xmpp:prosody.im/protocol/manage-clients";

let failed = 0;
const pass = (m) => console.log(`PASS: ${m}`);
const fail = (m) => {
  console.log(`FAIL: ${m}`);
  failed += 1;
};
const check = (ok, m, detail = "") => (ok ? pass(m) : fail(detail ? `${m}: ${detail}` : m));

function withTimeout(p, what) {
  let t;
  return Promise.race([
    p,
    new Promise((_, rej) => {
      t = setTimeout(() => rej(new Error(`timed out: ${what}`)), TIMEOUT);
    }),
  ]).finally(() => clearTimeout(t));
}

/// A client with our client id; `token` (if any) is what FAST fetches, `password` may be absent.
function make({ password, token, clientId = CLIENT_ID, software = "xmpp.js interop" }) {
  const state = { token, saved: null, deleted: false };
  const xmpp = client({
    service: `xmpp://127.0.0.1:${PORT}`,
    domain: "localhost",
    username: "alice",
    password,
    resource: "interop",
    userAgent: xml("user-agent", { id: clientId }, [
      xml("software", {}, software),
      xml("device", {}, "CI runner"),
    ]),
  });
  xmpp.reconnect.stop();
  // A debug build on a busy machine can take more than the default 2 s to open a stream.
  xmpp.timeout = TIMEOUT;
  xmpp.fast.fetchToken = async () => state.token;
  xmpp.fast.saveToken = async (t) => {
    state.saved = t;
  };
  xmpp.fast.deleteToken = async () => {
    state.deleted = true;
    state.token = null;
  };
  xmpp.on("error", (e) => {
    state.error = e;
  });
  return { xmpp, state };
}

async function rest(method, path) {
  const r = await fetch(`${HTTP}${path}`, { method, headers: { authorization: ADMIN } });
  let body = null;
  try {
    body = await r.json();
  } catch {}
  return { status: r.status, body };
}

async function main() {
  // 1. Password + client id; FAST token requested and saved.
  const first = make({ password: PASSWORD });
  await withTimeout(first.xmpp.start(), "password login");
  check(first.xmpp.status === "online", "password login over SASL2 with a client id");
  check(String(first.xmpp.jid).startsWith("alice@localhost/"), "Bind2 bound a resource", String(first.xmpp.jid));
  check(!!first.state.saved?.token, "FAST token received at login", JSON.stringify(first.state.saved));
  const token = first.state.saved;
  await first.xmpp.stop();

  // 2. The token alone (no password) logs in.
  const second = make({ token });
  await withTimeout(second.xmpp.start(), "token login");
  check(second.xmpp.status === "online", "FAST token login without the password (HT-SHA-256-NONE)");

  // 3. The manage-clients IQ lists it as connected with its software and device.
  const list = await second.xmpp.iqCaller.request(xml("iq", { type: "get" }, xml("list", { xmlns: NS_CM })));
  const clients = list.getChild("clients", NS_CM)?.getChildren("client") ?? [];
  const me = clients.find((c) => c.attrs.connected === "true" && c.getChild("user-agent")?.getChildText("software") === "xmpp.js interop");
  check(!!me, "manage-clients lists the client as connected", list.toString());
  check(me?.getChild("user-agent")?.getChildText("device") === "CI runner", "its device is listed");
  check(!!me?.getChild("auth")?.getChild("fast"), "its auth methods include fast");

  // 4. REST lists it too; revoking it through REST disconnects the session.
  const r = await rest("GET", "/user/alice/clients");
  const entry = r.body?.result?.clients?.find((c) => c.software === "xmpp.js interop");
  check(r.status === 200 && entry?.connected === true, "REST GET /user/alice/clients lists it connected", JSON.stringify(r.body));
  const gone = new Promise((res) => second.xmpp.once("disconnect", res));
  const del = await rest("DELETE", `/user/alice/clients/${encodeURIComponent(entry?.id ?? "none")}`);
  check(del.status === 200, "REST DELETE revokes it", JSON.stringify(del.body));
  try {
    await withTimeout(gone, "disconnect after revocation");
    pass("the revoked client is disconnected");
  } catch (e) {
    fail(`the revoked client is disconnected: ${e.message}`);
  }
  try {
    await second.xmpp.stop();
  } catch {}

  // 5. The token no longer works.
  const third = make({ token });
  try {
    await withTimeout(third.xmpp.start(), "login with the revoked token");
  } catch {}
  check(third.xmpp.status !== "online" && third.state.deleted, "the revoked token is refused (not-authorized)", `status ${third.xmpp.status}`);
  try {
    await third.xmpp.stop();
  } catch {}


  // 6. Logins per second: SCRAM-SHA-1 (password) against HT-SHA-256-NONE (token), sequential.
  // Every password login asks for a token (xmpp.js has none), which rotates the client's tokens:
  // the FAST run uses the newest.
  if (BENCH > 0) {
    const box = { token: null };
    const run = async (opts) => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < BENCH; i++) {
        const c = make({ ...opts(), clientId: "bench-client", software: "xmpp.js bench" });
        await withTimeout(c.xmpp.start(), "bench login");
        if (c.state.saved) box.token = c.state.saved;
        await c.xmpp.stop();
      }
      return (BENCH * 1e9) / Number(process.hrtime.bigint() - t0);
    };
    const scram = await run(() => ({ password: PASSWORD }));
    const fast = await run(() => ({ token: box.token }));
    console.log(`FIGURE: sequential xmpp.js logins over STARTTLS, ${BENCH} each: SCRAM-SHA-1 ${scram.toFixed(1)}/s, FAST HT-SHA-256-NONE ${fast.toFixed(1)}/s`);
  }
}

main()
  .catch((e) => fail(`unexpected error: ${e.stack || e}`))
  .finally(() => process.exit(Math.min(failed, 100)));
