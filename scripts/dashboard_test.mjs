// Drives the dashboard in headless Chromium over CDP (puppeteer-core), for scripts/dashboard-test:
// sign in, create a user, see that user's slixmpp session appear, close it, unload and load a
// module, and on the groups page create a group, add and remove the user, delete the group. Screenshots go to $ARTIFACTS. Prints PASS/FAIL lines; exits 1 on the first failure.
//
//   node dashboard_test.mjs URL ADMIN_JID ADMIN_PASSWORD  (env: CHROMIUM, ARTIFACTS, CLIENT_CMD)
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import puppeteer from "puppeteer-core";

const [url, adminJid, adminPw] = process.argv.slice(2);
const artifacts = process.env.ARTIFACTS;
const profile = mkdtempSync(join(tmpdir(), "oxpecker-chromium-"));
const pass = (m) => console.log("PASS: " + m);
let browser;
let client;

async function shot(page, name) {
  await page.screenshot({ path: join(artifacts, `dashboard-${name}.png`), fullPage: true });
}
// Waits until `fn` (run in the page) returns true.
async function until(page, what, fn, ...args) {
  try {
    await page.waitForFunction(fn, { timeout: 20000, polling: 200 }, ...args);
  } catch (e) {
    await shot(page, "failure").catch(() => {});
    throw new Error(`${what}: ${e.message}; status line: ${await page.$eval("#status", (s) => s.textContent).catch(() => "?")}`);
  }
}
async function go(page, hash) {
  await page.evaluate((h) => { location.hash = h; }, hash);
  await until(page, "page " + hash, (h) => document.querySelector(`#nav a[href="${h}"]`)?.classList.contains("active"), hash);
}
// Clicks a confirm-twice button.
async function clickTwice(page, selector) {
  await page.click(selector);
  await page.click(selector);
}

try {
  browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run", `--user-data-dir=${profile}`],
  });
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text() + " " + (m.location()?.url || "")); });

  // 1. Sign in.
  await page.goto(url, { waitUntil: "load" });
  await shot(page, "login");
  await page.type("#login-user", adminJid);
  await page.type("#login-secret", adminPw);
  await page.click("#login-button");
  await until(page, "signed in", () => !document.querySelector("#app").hidden);
  await until(page, "sign-in form hidden", () => document.querySelector("#login-view").offsetParent === null);
  await until(page, "overview cards", () => document.querySelector("#card-version"));
  const stored = await page.evaluate(() => localStorage.length + sessionStorage.length + document.cookie.length);
  if (stored !== 0) throw new Error("credentials must stay in memory, found browser storage");
  // Two samples of /metrics make the first chart points.
  await until(page, "charts drawn", () => document.querySelectorAll("#charts .uplot").length === 3);
  await new Promise((r) => setTimeout(r, 5500));
  await shot(page, "overview");
  pass("signed in; overview with version, hosts and live charts; nothing in browser storage");

  // 2. Create a user.
  const user = "dash" + Math.floor(Math.random() * 1e6);
  const userPw = "pw-" + Math.random().toString(36).slice(2);
  await go(page, "#users");
  await page.type("#new-user", user);
  await page.type("#new-user-password", userPw);
  await page.click("#create-user-button");
  await until(page, "user row", (j) => document.querySelector(`#users tr[data-jid="${j}"]`), `${user}@localhost`);
  await shot(page, "users");
  pass(`created ${user}@localhost from the users page`);

  // 3. A slixmpp session of that user appears on the sessions page.
  const [cmd, ...cargs] = JSON.parse(process.env.CLIENT_CMD);
  client = spawn(cmd, [...cargs, `${user}@localhost`, userPw, "dashboard"], { stdio: ["ignore", "pipe", "inherit"] });
  let clientOut = "";
  const clientExit = new Promise((r) => client.on("exit", (code) => r(code)));
  client.stdout.on("data", (d) => { clientOut += d; });
  await go(page, "#sessions");
  const full = `${user}@localhost/dashboard`;
  await until(page, "session row", (j) => document.querySelector(`#sessions tr[data-jid="${j}"]`), full);
  const row = await page.$eval(`#sessions tr[data-jid="${full}"]`, (tr) => tr.textContent);
  if (!row.includes("tcp") || !row.includes("TLSv1")) throw new Error("session row lacks transport or TLS: " + row);
  await shot(page, "sessions");
  pass("the slixmpp session appears with its transport and TLS version");

  // 4. Close it: the row goes and the client is disconnected.
  await clickTwice(page, `#sessions tr[data-jid="${full}"] button`);
  await until(page, "session row gone", (j) => !document.querySelector(`#sessions tr[data-jid="${j}"]`), full);
  const code = await Promise.race([clientExit, new Promise((r) => setTimeout(() => r("timeout"), 20000))]);
  if (code !== 0 || !clientOut.includes("closed")) throw new Error(`client not disconnected (exit ${code}, output ${clientOut})`);
  await shot(page, "session-closed");
  pass("closing the session disconnects the client");

  // 5. Unload and load a module.
  await go(page, "#modules");
  await until(page, "modules table", () => document.querySelector('#modules tr[data-module="ping"]'));
  await clickTwice(page, '#modules tr[data-module="ping"] button.danger');
  await until(page, "ping unloaded", () => !document.querySelector('#modules tr[data-module="ping"]') && document.querySelector("#status").textContent.includes("unloaded"));
  await shot(page, "module-unloaded");
  await page.type("#load-module", "ping");
  await page.click("#load-module-button");
  await until(page, "ping loaded", () => document.querySelector('#modules tr[data-module="ping"]'));
  await shot(page, "module-loaded");
  pass("unloaded and loaded the ping module");

  // 6. Groups: create one, add the user, remove the user, delete the group.
  await go(page, "#groups");
  const gid = "dash-team";
  await page.type("#group-id", gid);
  await page.type("#group-name", "Dash Team");
  await page.click("#create-group-button");
  const grow = `#groups tr[data-group="${gid}"]`;
  await until(page, "group row", (s) => document.querySelector(s)?.textContent.includes("Dash Team"), grow);
  await page.type(`${grow} .add-member-name`, user);
  await page.click(`${grow} form.add-member button`);
  await until(page, "member listed", (s, u) => document.querySelector(`${s} .member[data-member="${u}"]`), grow, user);
  await shot(page, "group-member");
  await page.click(`${grow} .member[data-member="${user}"] button`);
  await until(page, "member removed", (s, u) => document.querySelector(s) && !document.querySelector(`${s} .member[data-member="${u}"]`), grow, user);
  await clickTwice(page, `${grow} button.danger`);
  await until(page, "group deleted", (s) => !document.querySelector(s) && document.querySelector("#groups"), grow);
  await shot(page, "group-deleted");
  pass("groups page: created a group, added and removed a member, deleted it");

  if (errors.length) throw new Error("errors in the page: " + errors.join("; "));
  pass("no script errors in the page");
} catch (e) {
  console.log("FAIL: " + e.message);
  process.exitCode = 1;
} finally {
  if (client && client.exitCode === null) client.kill();
  if (browser) await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
