#!/usr/bin/env python3
"""Three-node cluster check: slixmpp clients on different Oxpecker nodes of one cluster.

Run by scripts/cluster-test (three_nodes_part), which starts the nodes n1, n2, n3 on one
PostgreSQL and one NATS server, creates the users alice, bob, carol, dave and erin (one
password) and passes the pid of n2, which this driver kills with SIGKILL half way through.
Prints one `PASS: step` / `FAIL: step (reason)` line per step; a step whose prerequisite failed
is reported as FAIL too, so the number of steps is always the same. Steps that do not depend on
each other run whatever the other's outcome. Exits 0 only if every step passed.
"""

import argparse
import asyncio
import base64
import json
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import slixmpp

MUC_USER = "http://jabber.org/protocol/muc#user"
DELAY = "urn:xmpp:delay"


class Client(slixmpp.ClientXMPP):
    """A slixmpp client connecting to one node's address, trusting one CA file, queueing what it gets."""

    def __init__(self, jid, password, addr, ca_file, sm=False):
        super().__init__(jid, password)
        self.fixed = addr
        self.ca_certs = Path(ca_file)
        for plugin in ("xep_0030", "xep_0004", "xep_0045", "xep_0203"):
            self.register_plugin(plugin)
        if sm:
            self.register_plugin("xep_0198")
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.lost = loop.create_future()
        self.messages = asyncio.Queue()
        self.groupchat = []
        self.presences = asyncio.Queue()
        self.stream_errors = []
        self.sm_events = []
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_auth", lambda *_: self._fail("authentication failed"))
        self.add_event_handler("connection_failed", lambda e: self._fail(f"connection failed: {e}"))
        self.add_event_handler("disconnected", self._on_disconnected)
        self.add_event_handler("stream_error", lambda e: self.stream_errors.append(e["condition"]))
        self.add_event_handler("message", self._on_message)
        self.add_event_handler("groupchat_message", self.groupchat.append)
        self.add_event_handler("presence", self.presences.put_nowait)
        for ev in ("sm_enabled", "sm_failed", "session_resumed"):
            self.add_event_handler(ev, lambda _e, ev=ev: self.sm_events.append(ev))

    async def get_dns_records(self, domain, port=None):
        """No DNS: always connect to the node given (the certificate is still checked for `domain`)."""
        return [(domain, self.fixed[0], self.fixed[1])]

    def start(self):
        """Connects (again) to `self.fixed`; `started` resolves at session start."""
        loop = asyncio.get_running_loop()
        if self.started.done():
            self.started = loop.create_future()
        if self.lost.done():
            self.lost = loop.create_future()
        self.connect(address=self.fixed, force_starttls=True)

    def _on_start(self, _event):
        if not self.started.done():
            self.started.set_result(True)

    def _on_disconnected(self, reason):
        self._fail(f"disconnected before session start ({reason})")
        if not self.lost.done():
            self.lost.set_result(reason)

    def _fail(self, reason):
        if not self.started.done():
            self.started.set_exception(RuntimeError(reason))

    def _on_message(self, msg):
        if msg["type"] in ("chat", "normal"):
            self.messages.put_nowait(msg)


async def wait_for(queue, pred, timeout, what):
    """The first item of `queue` for which `pred` holds (others are dropped)."""
    async def first():
        while True:
            item = await queue.get()
            if pred(item):
                return item

    try:
        return await asyncio.wait_for(first(), timeout)
    except asyncio.TimeoutError:
        raise RuntimeError(f"no {what} within {timeout:.0f} s") from None


class Rest:
    """The admin REST API of one node (HTTP basic auth as an admin)."""

    def __init__(self, base, user, password):
        self.base = base.rstrip("/")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.auth = f"Basic {token}"

    def _get(self, path):
        req = urllib.request.Request(self.base + path, headers={"Authorization": self.auth})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return e.code, json.loads(body or b"null")
            except ValueError:
                return e.code, body.decode(errors="replace")

    async def get(self, path):
        """(status, body) of GET path: the JSON answer, without the API's `result` wrapper."""
        status, body = await asyncio.to_thread(self._get, path)
        if isinstance(body, dict) and set(body) == {"result"}:
            body = body["result"]
        return status, body


def listed(users, name):
    """The resources `name` has in a GET /users body."""
    return [u.get("resource") for u in users.get("users", []) if u.get("username") == name]


async def run(args, report):
    nodes = []
    for a in args.nodes.split(","):
        host, port = a.rsplit(":", 1)
        nodes.append((host, int(port)))
    if len(nodes) != 3:
        raise SystemExit("--nodes needs three addresses")
    n1, n2, n3 = nodes
    rest = Rest(args.rest, args.admin, args.admin_password)
    step_t = args.timeout
    d = args.domain
    failed = set()
    clients = []

    def client(user, resource, addr, sm=False):
        c = Client(f"{user}@{d}/{resource}", args.password, addr, args.ca, sm=sm)
        clients.append(c)
        return c

    async def step(name, body, needs=()):
        missing = [n for n in needs if n in failed]
        if missing:
            failed.add(name)
            report(name, False, f"skipped: {', '.join(missing)} failed")
            return
        t0 = time.monotonic()
        try:
            detail = await asyncio.wait_for(body(), step_t + 2)
            report(name, True, f"{detail}; {time.monotonic() - t0:.1f} s" if detail else "")
        except Exception as e:  # noqa: BLE001 - every failure is reported as this step's
            failed.add(name)
            reason = str(e) or type(e).__name__
            report(name, False, reason)

    alice = client("alice", "laptop", n1)
    bob = client("bob", "phone", n2, sm=True)
    carol = client("carol", "tablet", n3)
    nonce = uuid.uuid4().hex[:8]

    LOGIN = "logins: alice on n1, bob on n2 (stream management enabled), carol on n3"

    async def logins():
        for c in (alice, bob, carol):
            c.start()
        await asyncio.gather(alice.started, bob.started, carol.started)
        for c in (alice, bob, carol):
            c.send_presence()
        # Every node's directory must show all three before messages cross.
        for _ in range(100):
            status, users = await rest.get("/users")
            if status == 200 and all(listed(users, u) for u in ("alice", "bob", "carol")):
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"n1's /users never listed all three: {users}")
        if "sm_enabled" not in bob.sm_events:
            raise RuntimeError(f"bob's stream management not enabled ({bob.sm_events})")
        return ", ".join(c.boundjid.full for c in (alice, bob, carol))

    await step(LOGIN, logins)

    async def full_jid():
        body = f"to carol's full JID {nonce}"
        alice.send_message(mto=carol.boundjid.full, mbody=body, mtype="chat")
        got = await wait_for(carol.messages, lambda m: m["body"] == body, step_t, "message on n3")
        if got["from"] != alice.boundjid:
            raise RuntimeError(f"from {got['from']}, expected {alice.boundjid}")
        return f"from {got['from']}"

    await step("message n1 -> n3 to a full JID arrives, from the sender's full JID", full_jid, [LOGIN])

    async def bare_jid():
        body = f"to alice's bare JID {nonce}"
        carol.send_message(mto=alice.boundjid.bare, mbody=body, mtype="chat")
        got = await wait_for(alice.messages, lambda m: m["body"] == body, step_t, "message on n1")
        if got["from"] != carol.boundjid:
            raise RuntimeError(f"from {got['from']}, expected {carol.boundjid}")
        return f"from {got['from']}"

    await step("message n3 -> n1 to a bare JID arrives", bare_jid, [LOGIN])

    SUB = "subscription n1 -> n2: alice gets `subscribed` and bob's available presence"

    async def subscribe():
        # bob's client authorises (and subscribes back, which alice's authorises): slixmpp's
        # default auto_authorize/auto_subscribe.
        alice.send_presence_subscription(pto=bob.boundjid.bare)
        await wait_for(
            alice.presences,
            lambda p: p["type"] == "subscribed" and p["from"].bare == bob.boundjid.bare,
            step_t,
            "`subscribed` from bob",
        )
        got = await wait_for(
            alice.presences,
            lambda p: p["from"] == bob.boundjid and p["type"] in ("available", "chat", "away"),
            step_t,
            "available presence from bob's full JID",
        )
        return f"available from {got['from']}"

    await step(SUB, subscribe, [LOGIN])

    async def follows():
        status = f"busy on n2 {nonce}"
        bob.send_presence(pshow="dnd", pstatus=status)
        got = await wait_for(
            alice.presences,
            lambda p: p["from"] == bob.boundjid and p["status"] == status,
            step_t,
            "bob's new presence",
        )
        return f"show {got['show']} from {got['from']}"

    await step("presence that follows: bob's change on n2 reaches alice on n1", follows, [SUB])

    async def rest_views():
        status, users = await rest.get("/users")
        if status != 200 or listed(users, "carol") != [carol.boundjid.resource]:
            raise RuntimeError(f"/users: {status} {users}")
        status, user = await rest.get("/user/carol")
        sessions = (user or {}).get("user", {}).get("sessions", []) if status == 200 else []
        if not user["user"].get("connected") or [s.get("node") for s in sessions] != ["n3"]:
            raise RuntimeError(f"/user/carol: {status} {user}")
        status, listing = await rest.get("/sessions")
        mine = [s for s in (listing or {}).get("sessions", []) if s.get("jid") == carol.boundjid.full]
        if status != 200 or [s.get("node") for s in mine] != ["n3"]:
            raise RuntimeError(f"/sessions: {status} {listing}")
        return f"/users count {users['count']}, carol's session on node {sessions[0]['node']}"

    await step("REST on n1: /users, /user/carol and /sessions list carol's session on n3", rest_views, [LOGIN])

    async def conflict():
        first = client("dave", "desk", n1)
        first.start()
        await first.started
        second = client("dave", "desk", n2)
        second.start()
        await second.started
        reason = await asyncio.wait_for(first.lost, step_t)
        if "conflict" not in first.stream_errors:
            raise RuntimeError(f"n1's stream ended without <conflict/> ({first.stream_errors}, {reason})")
        if second.boundjid.full != f"dave@{d}/desk":
            raise RuntimeError(f"n2 bound {second.boundjid.full}")
        return "the n1 session got <conflict/>, n2 holds dave@{}/desk".format(d)

    await step("resource conflict: dave/desk bound on n1, then on n2, kicks the first (`conflict`)", conflict)

    async def groupchat():
        room = slixmpp.JID(f"c3-{nonce}@conference.{d}")
        own, *_ = await alice["xep_0045"].join_muc_wait(room, "alice", maxstanzas=0, timeout=step_t)
        x = own.xml.find(f"{{{MUC_USER}}}x")
        codes = {s.get("code") for s in x.findall(f"{{{MUC_USER}}}status")} if x is not None else set()
        if "201" in codes:
            await alice["xep_0045"].set_room_config(room, alice["xep_0004"].make_form(ftype="submit"), timeout=step_t)
        for c, nick in ((bob, "bob"), (carol, "carol")):
            _own, _subject, occupants, _history = await c["xep_0045"].join_muc_wait(
                room, nick, maxstanzas=0, timeout=step_t
            )
            others = sorted(str(p["from"].resource) for p in occupants)
            if "alice" not in others:
                raise RuntimeError(f"{nick} joined a room without alice (occupants {others}): not one room")
        hello, marker = f"hello all {nonce}", f"marker {nonce}"
        carol.send_message(mto=room, mbody=hello, mtype="groupchat")
        alice.send_message(mto=room, mbody=marker, mtype="groupchat")
        for _ in range(int(step_t * 10)):
            if all(any(m["body"] == marker for m in c.groupchat) for c in (alice, bob, carol)):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # a duplicate would follow closely
        counts = {c.boundjid.bare: sum(m["body"] == hello for m in c.groupchat) for c in (alice, bob, carol)}
        if set(counts.values()) != {1}:
            raise RuntimeError(f"copies of the groupchat message per occupant: {counts}")
        return f"{room}: one copy each on n1, n2, n3"

    await step("group chat across the three nodes: one occupant per node, each gets the message once", groupchat, [LOGIN])

    # kill -9 n2 (bob's node).
    KILL = "kill -9 n2: within the TTL, n1's REST no longer lists bob"

    async def kill():
        os.kill(args.kill_pid, signal.SIGKILL)
        killed = time.monotonic()
        await asyncio.wait_for(bob.lost, step_t)
        while True:
            status, users = await rest.get("/users")
            status_b, user = await rest.get("/user/bob")
            if (
                status == 200
                and not listed(users, "bob")
                and status_b == 200
                and user["user"].get("connected") is False
            ):
                return f"gone after {time.monotonic() - killed:.1f} s"
            await asyncio.sleep(0.2)

    await step(KILL, kill, [LOGIN])

    async def unavailable():
        got = await wait_for(
            alice.presences,
            lambda p: p["from"] == bob.boundjid and p["type"] == "unavailable",
            step_t,
            "unavailable presence from bob's full JID",
        )
        return f"from {got['from']}"

    await step("kill -9 n2: alice (n1) receives bob's unavailable presence", unavailable, [KILL, SUB])

    offline_body = f"while you were away {nonce}"
    alice.send_message(mto=bob.boundjid.bare, mbody=offline_body, mtype="chat")
    RECONNECT = "bob's client reconnects to n3: stream resumption refused (<failed/>), bound afresh"

    async def reconnect():
        bob.sm_events.clear()
        bob.fixed = n3
        t0 = time.monotonic()
        bob.start()
        await bob.started
        if "sm_failed" not in bob.sm_events or "session_resumed" in bob.sm_events:
            raise RuntimeError(f"stream management events on n3: {bob.sm_events}")
        bob.send_presence()
        return f"bound {bob.boundjid.full} {time.monotonic() - t0:.1f} s after connecting"

    await step(RECONNECT, reconnect, [KILL])

    async def offline():
        got = await wait_for(bob.messages, lambda m: m["body"] == offline_body, step_t, "the offline message")
        if got.xml.find(f"{{{DELAY}}}delay") is None:
            raise RuntimeError("delivered without a <delay/> stamp: it did not come from offline storage")
        return f"from {got['from']}, stamped {got['delay']['stamp']}"

    await step("a message to bob while his node was dead went offline and reaches him on n3", offline, [RECONNECT])

    for c in clients:
        try:
            c.disconnect(wait=1.0)
        except Exception:  # noqa: BLE001 - best effort at the end
            pass
    await asyncio.sleep(0.5)
    for c in clients:
        try:
            c.abort()
        except Exception:  # noqa: BLE001
            pass
    return failed


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", required=True, help="c2s addresses of n1,n2,n3 (host:port,...)")
    p.add_argument("--rest", required=True, help="n1's admin REST base URL (…/admin_rest)")
    p.add_argument("--admin", required=True)
    p.add_argument("--admin-password", required=True)
    p.add_argument("--password", required=True, help="the users' password")
    p.add_argument("--domain", default="localhost")
    p.add_argument("--ca", required=True, help="PEM file to trust (the nodes' certificate)")
    p.add_argument("--kill-pid", type=int, required=True, help="n2's pid (killed with SIGKILL)")
    p.add_argument("--timeout", type=float, default=30, help="seconds per step")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.CRITICAL)

    def report(step, ok, detail):
        line = f"{'PASS' if ok else 'FAIL'}: {step}"
        if detail:
            line += f" ({detail})"
        print(line, flush=True)

    failed = asyncio.run(run(args, report))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
