// The browser side of scripts/browser (copied next to its node_modules and run from there):
// serves Converse.js and a test page, drives headless Chromium over CDP (puppeteer-core) to log
// in over WebSocket and then BOSH, sends a message to the slixmpp echo client and waits for its
// answer, saves screenshots; over WebSocket it also shares a file through the chat toolbar's file
// input (XEP-0363 upload found by disco), checks that the peer got its GET URL and fetches the
// bytes back; then xmpp.js logs in over ws:// and does the same.
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
const ECHO_OUT = env('ECHO_OUT');
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
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
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
    window.__env = converse.env;
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
  if (transport === 'websocket') await uploadRound(page);
  await ctx.close();
  log.end();
}

// A line of the echo client's output matching `re`, waited for.
async function echoLine(re, what) {
  for (let waited = 0; waited < STEP_MS; waited += 200) {
    const m = fs.readFileSync(ECHO_OUT, 'utf8').split('\n').map((l) => l.match(re)).find(Boolean);
    if (m) return m;
    await sleep(200);
  }
  throw new Error(`timed out: ${what}`);
}

// XEP-0363 through Converse's UI: disco finds upload.localhost, the toolbar's file input takes a
// file, Converse asks for a slot, PUTs the bytes and sends bob the GET URL; bob must get it
// (body and jabber:x:oob) and the URL must serve the same bytes.
async function uploadRound(page) {
  const items = await step('the server\'s disco#items for localhost lists upload.localhost', async () => {
    const jids = await page.evaluate(async () => {
      const { $iq, Strophe } = window.__env;
      const r = await window.__converse.api.sendIQ(
        $iq({ type: 'get', to: 'localhost' }).c('query', { xmlns: Strophe.NS.DISCO_ITEMS }));
      return [...r.getElementsByTagName('item')].map((i) => i.getAttribute('jid'));
    });
    if (!jids.includes('upload.localhost')) throw new Error(`items: ${jids.join(', ') || 'none'}`);
  });
  if (!items) return;
  const input = await step('Converse.js enables its upload button (XEP-0363 found by disco)', async () => {
    const chat = 'converse-chat[jid="bob@localhost"] converse-chat-toolbar';
    await page.waitForSelector(`${chat} button[title="Choose a file to send"]`, { timeout: STEP_MS });
    return page.$(`${chat} input.fileupload[type=file]`).then((h) => h || Promise.reject(new Error('no file input')));
  });
  if (!input) return;
  const name = 'oxpecker-upload.txt';
  const bytes = Buffer.from(`Oxpecker XEP-0363 from a real browser ${Date.now()} ${Math.random()}\n`
    + 'ünïcødé ✓\n'.repeat(64));
  const file = path.join(PROFILE, '..', name);
  fs.writeFileSync(file, bytes);
  const url = await step(`Converse.js uploads ${name} (${bytes.length} bytes) through the toolbar's file input`, async () => {
    await input.uploadFile(file);
    const got = await page.evaluate(async (ms) => {
      const chat = await window.__converse.api.chats.get('bob@localhost');
      for (const end = Date.now() + ms; Date.now() < end;) {
        const msgs = chat.messages.models;
        // The message Converse sends once its PUT succeeded carries the GET URL as oob_url.
        const done = msgs.find((m) => m.get('oob_url') && m.get('sender') === 'me');
        if (done) return done.get('oob_url');
        const error = msgs.find((m) => m.get('type') === 'error');
        if (error) throw new Error(`Converse.js says: ${error.get('message')}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      const seen = chat.messages.models
        .map((m) => JSON.stringify(['type', 'upload', 'get', 'oob_url', 'body', 'message'].map((k) => m.get(k))));
      throw new Error(`timed out: the upload (messages: ${seen.join(' ') || 'none'})`);
    }, STEP_MS);
    if (!got.endsWith(`/${name}`)) throw new Error(`unexpected GET URL ${got}`);
    return got;
  });
  if (!url) return;
  await step('bob (slixmpp) receives the GET URL in <x xmlns=\'jabber:x:oob\'> and as the body', async () => {
    const oob = await echoLine(/^OOB alice@localhost\/\S+ (\S+)$/, 'the OOB URL at bob');
    if (oob[1] !== url) throw new Error(`bob got ${oob[1]}, Converse uploaded to ${url}`);
    const esc = url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    await echoLine(new RegExp(`^GOT alice@localhost/\\S+ ${esc}$`), 'the URL as the body at bob');
  });
  await step('the GET URL serves the uploaded bytes (node fetch)', async () => {
    const r = await fetch(url);
    if (r.status !== 200) throw new Error(`status ${r.status}`);
    const got = Buffer.from(await r.arrayBuffer());
    if (!got.equals(bytes)) throw new Error(`${got.length} bytes differ from the ${bytes.length} uploaded`);
    const type = r.headers.get('content-type') || '';
    if (!type.startsWith('text/plain')) throw new Error(`content-type ${type}`);
  });
  await step('the shared file is shown in the chat', () => page.waitForFunction(
    (u) => [...document.querySelectorAll('converse-chat-message a')].some((a) => a.href === u),
    { timeout: STEP_MS }, url));
  await step('screenshot saved (target/artifacts/browser-upload.png)', () => page.screenshot({ path: path.join(ARTIFACTS, 'browser-upload.png') }));
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
