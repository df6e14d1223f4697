// The browser side of scripts/browser (copied next to its node_modules and run from there):
// serves Converse.js and a test page, drives headless Chromium over CDP (puppeteer-core) to log
// in over WebSocket and then BOSH, sends a message to the slixmpp echo client and waits for its
// answer, saves screenshots; then xmpp.js logs in over ws:// and does the same.
// Prints `PASS: step` / `FAIL: step (reason)` lines; exits 0 only if every step passed.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';
import { client, xml } from '@xmpp/client';
import { WebSocket } from 'ws';

// xmpp.js expects the WebSocket global of browsers and newer Node versions.
globalThis.WebSocket ??= WebSocket;

const here = path.dirname(fileURLToPath(import.meta.url));
const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const HTTP_PORT = env('HTTP_PORT');
const PAGE_PORT = Number(env('PAGE_PORT'));
const ARTIFACTS = env('ARTIFACTS');
const PROFILE = env('PROFILE');
const ALICE_PW = env('ALICE_PW');
const CAROL_PW = env('CAROL_PW');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const STEP_MS = 30000;

let failed = 0;
let passed = 0;
const pass = (s) => { passed++; console.log(`PASS: ${s}`); };
const fail = (s, e) => { failed++; console.log(`FAIL: ${s} (${e && e.message ? e.message : e})`); };
async function step(name, f) {
  try {
    const r = await f();
    pass(name);
    return r === undefined ? true : r;
  } catch (e) {
    fail(name, e);
    return undefined;
  }
}
const withTimeout = (p, ms, what) => Promise.race([
  p,
  new Promise((_, rej) => setTimeout(() => rej(new Error(`timed out: ${what}`)), ms)),
]);

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Oxpecker + Converse.js</title>
<link rel="stylesheet" href="/dist/converse.min.css"></head>
<body><script type="module">
import converse from '/dist/converse.min.js';
const q = new URLSearchParams(location.search);
const transport = q.get('t');
window.__test = { connected: false, bodies: [], errors: [] };
converse.plugins.add('oxpecker-test', {
  initialize() {
    const _converse = this._converse;
    window.__converse = _converse;
    _converse.api.listen.on('connected', () => {
      _converse.api.connection.get().addHandler((st) => {
        const b = st.getElementsByTagName('body')[0];
        if (b) window.__test.bodies.push(b.textContent);
        return true;
      }, null, 'message');
      window.__test.connected = true;
    });
  },
});
const opts = {
  assets_path: '/dist/',
  whitelisted_plugins: ['oxpecker-test'],
  view_mode: 'fullscreen',
  auto_login: true,
  auto_reconnect: false,
  discover_connection_methods: false,
  jid: 'alice@localhost',
  password: q.get('pw'),
  allow_non_roster_messaging: true,
  play_sounds: false,
  loglevel: 'info',
};
if (transport === 'bosh') opts.bosh_service_url = q.get('url');
else opts.websocket_url = q.get('url');
converse.initialize(opts);
</script></body></html>`;

const DIST = path.join(here, 'node_modules', 'converse.js', 'dist');
const TYPES = { '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json', '.wasm': 'application/wasm', '.svg': 'image/svg+xml', '.woff2': 'font/woff2', '.woff': 'font/woff', '.ttf': 'font/ttf', '.png': 'image/png' };
const pageServer = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/') {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    return res.end(PAGE);
  }
  if (url.pathname.startsWith('/dist/')) {
    const file = path.normalize(path.join(DIST, url.pathname.slice(6)));
    if (file.startsWith(DIST) && fs.existsSync(file) && fs.statSync(file).isFile()) {
      res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream' });
      return fs.createReadStream(file).pipe(res);
    }
  }
  res.writeHead(404);
  res.end();
});
await new Promise((r) => pageServer.listen(PAGE_PORT, '127.0.0.1', r));

const browser = await step('headless Chromium starts (puppeteer-core over CDP)', () => puppeteer.launch({
  executablePath: CHROMIUM,
  headless: true,
  userDataDir: PROFILE,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
}));

async function converseRound(transport, url) {
  const ctx = await browser.createBrowserContext();
  const page = await ctx.newPage();
  await page.setViewport({ width: 1200, height: 800 });
  const log = fs.createWriteStream(path.join(ARTIFACTS, `browser-${transport}-console.log`));
  page.on('console', (m) => log.write(`${m.type()}: ${m.text()}\n`));
  page.on('pageerror', (e) => log.write(`pageerror: ${e.message}\n`));
  const target = `http://127.0.0.1:${PAGE_PORT}/?t=${transport}&url=${encodeURIComponent(url)}&pw=${encodeURIComponent(ALICE_PW)}`;
  const ok = await step(`Converse.js logs in as alice over ${transport} (${url})`, async () => {
    await page.goto(target);
    await page.waitForFunction(() => window.__test && window.__test.connected, { timeout: STEP_MS });
  });
  if (!ok) {
    await ctx.close();
    log.end();
    return;
  }
  const body = `hello from Converse.js over ${transport}`;
  await step(`Converse.js sends "${body}" to bob (slixmpp)`, () => page.evaluate(async (b) => {
    const chat = await window.__converse.api.chats.open('bob@localhost', {}, true);
    await chat.sendMessage({ body: b });
  }, body));
  await step(`bob's answer reaches Converse.js over ${transport}`, () => page.waitForFunction(
    (b) => window.__test.bodies.includes(`echo: ${b}`), { timeout: STEP_MS }, body));
  await step(`the answer is shown in the chat (${transport})`, () => page.waitForFunction(
    (b) => document.body.innerText.includes(`echo: ${b}`), { timeout: STEP_MS }, body));
  await step(`screenshot saved (target/artifacts/browser-${transport}.png)`, () => page.screenshot({ path: path.join(ARTIFACTS, `browser-${transport}.png`) }));
  await ctx.close();
  log.end();
}

if (browser) {
  await converseRound('websocket', `ws://127.0.0.1:${HTTP_PORT}/xmpp-websocket`);
  await converseRound('bosh', `http://127.0.0.1:${HTTP_PORT}/http-bind`);
  await browser.close();
}

// xmpp.js: a second, independent WebSocket client.
await step('xmpp.js logs in as carol over ws:// and gets bob\'s answer', async () => {
  const xmpp = client({
    service: `ws://127.0.0.1:${HTTP_PORT}/xmpp-websocket`,
    domain: 'localhost',
    username: 'carol',
    password: CAROL_PW,
    resource: 'xmppjs',
  });
  xmpp.on('error', () => {});
  const body = 'hello from xmpp.js';
  const answered = new Promise((resolve) => {
    xmpp.on('stanza', (st) => {
      if (st.is('message') && st.getChildText('body') === `echo: ${body}`) resolve();
    });
  });
  await withTimeout(xmpp.start(), STEP_MS, 'xmpp.js login');
  await xmpp.send(xml('presence'));
  await xmpp.send(xml('message', { to: 'bob@localhost', type: 'chat' }, xml('body', {}, body)));
  await withTimeout(answered, STEP_MS, 'the answer to xmpp.js');
  await xmpp.stop();
});

pageServer.close();
console.log(`${passed} passed, ${failed} failed (browser)`);
process.exit(failed === 0 ? 0 : 1);
