#!/usr/bin/env python3
"""Third-party group chat check: slixmpp's XEP-0045 plugin drives a room on a running Oxpecker.

Run by scripts/interop (which installs slixmpp, starts the server and creates the accounts).
A creates an instant room on the default conference.<domain> service, B joins, both send
groupchat messages and receive each other's, A kicks B, then destroys the room. Prints one
`PASS: step` / `FAIL: step (reason)` line per step (as many lines whatever fails) and exits 0
only if every step passed within the time limit.
"""

import argparse
import asyncio
import logging
import ssl
import sys
import time
import uuid
from pathlib import Path

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout, PresenceError

STEPS = [
    "MUC: A and B log in",
    "MUC: the server's disco#items lists the conference service",
    "MUC: A creates an instant room (status 201, then an empty submitted form)",
    "MUC: B joins as a second occupant; A sees B's presence",
    "MUC: groupchat A -> room reaches B, with the room's stanza-id",
    "MUC: groupchat B -> room reaches A",
    "MUC: A kicks B (B gets status 307)",
    "MUC: A destroys the room (A gets the <destroy/> presence)",
]

MUC_USER = "http://jabber.org/protocol/muc#user"


class Client(slixmpp.ClientXMPP):
    """A slixmpp client with the MUC plugin, connecting to a fixed address, trusting one CA file."""

    def __init__(self, jid, password, host, port, ca_file):
        super().__init__(jid, password)
        self.fixed = (host, port)
        self.ca_certs = Path(ca_file)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0045")
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.groupchat = asyncio.Queue()
        self.presences = asyncio.Queue()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_auth", lambda *_: self._fail("authentication failed"))
        self.add_event_handler("connection_failed", lambda e: self._fail(f"connection failed: {e}"))
        self.add_event_handler("groupchat_message", self.groupchat.put_nowait)
        self.add_event_handler("groupchat_presence", self.presences.put_nowait)

    async def get_dns_records(self, domain, port=None):
        """No DNS: always connect to the given address (the certificate is still checked)."""
        return [(domain, self.fixed[0], self.fixed[1])]

    def _on_start(self, _event):
        if not self.started.done():
            self.started.set_result(True)

    def _fail(self, reason):
        if not self.started.done():
            self.started.set_exception(RuntimeError(reason))


async def wait_for(queue, pred, timeout):
    """The first item of `queue` for which `pred` holds (others are dropped)."""
    while True:
        item = await asyncio.wait_for(queue.get(), timeout)
        if pred(item):
            return item


def codes(pres):
    """The muc#user status codes of a presence."""
    x = pres.xml.find(f"{{{MUC_USER}}}x")
    if x is None:
        return set()
    return {s.get("code") for s in x.findall(f"{{{MUC_USER}}}status")}


async def run(args, report):
    deadline = time.monotonic() + args.timeout

    def left():
        return max(0.1, deadline - time.monotonic())

    a = Client(args.a_jid, args.a_password, args.host, args.port, args.ca)
    b = Client(args.b_jid, args.b_password, args.host, args.port, args.ca)
    clients = [a, b]
    service = f"conference.{args.domain}"
    room = slixmpp.JID(f"interop-{uuid.uuid4().hex[:8]}@{service}")
    try:
        for c in clients:
            c.connect(address=(args.host, args.port), force_starttls=True)
            await asyncio.wait_for(c.started, left())
            c.send_presence()
        report(True, f"{a.boundjid.full}, {b.boundjid.full}")

        items = await a["xep_0030"].get_items(jid=args.domain, timeout=left())
        jids = [i[0] for i in items["disco_items"]["items"]]
        if service not in [str(j) for j in jids]:
            raise RuntimeError(f"{service} not in {jids}")
        report(True, service)

        own, _subject, _occupants, _history = await a["xep_0045"].join_muc_wait(
            room, "Alice", maxstanzas=0, timeout=left()
        )
        if "201" not in codes(own):
            raise RuntimeError(f"no 201 in the self-presence codes {codes(own)}")
        form = a["xep_0004"].make_form(ftype="submit")
        await a["xep_0045"].set_room_config(room, form, timeout=left())
        report(True, str(room))

        await b["xep_0045"].join_muc_wait(room, "Bob", maxstanzas=0, timeout=left())
        await wait_for(a.presences, lambda p: p["from"].resource == "Bob", left())
        report(True, "")

        hello = f"hello room {uuid.uuid4().hex[:6]}"
        a.send_message(mto=room, mbody=hello, mtype="groupchat")
        got = await wait_for(b.groupchat, lambda m: m["body"] == hello, left())
        sid = got.xml.find("{urn:xmpp:sid:0}stanza-id")
        if sid is None or sid.get("by") != str(room):
            raise RuntimeError("no stanza-id by the room")
        if got["from"].resource != "Alice":
            raise RuntimeError(f"from is {got['from']}")
        report(True, f"stanza-id {sid.get('id')}")

        back = f"hello back {uuid.uuid4().hex[:6]}"
        b.send_message(mto=room, mbody=back, mtype="groupchat")
        got = await wait_for(a.groupchat, lambda m: m["body"] == back, left())
        if got["from"].resource != "Bob":
            raise RuntimeError(f"from is {got['from']}")
        report(True, "")

        await a["xep_0045"].set_role(room, "Bob", "none", reason="interop", timeout=left())
        kicked = await wait_for(
            b.presences,
            lambda p: p["type"] == "unavailable" and "307" in codes(p),
            left(),
        )
        report(True, f"codes {sorted(codes(kicked))}")

        await a["xep_0045"].destroy(room, reason="done", timeout=left())
        await wait_for(
            a.presences,
            lambda p: p.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}destroy") is not None,
            left(),
        )
        report(True, "")
        for c in clients:
            await asyncio.wait_for(c.disconnect(wait=2.0), left())
        clients = []
    finally:
        for c in clients:
            try:
                c.abort()
            except Exception:  # noqa: BLE001 - best effort on the failure path
                pass


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--ca", required=True, help="PEM file to trust (the server's certificate)")
    p.add_argument("--a-jid", required=True)
    p.add_argument("--a-password", required=True)
    p.add_argument("--b-jid", required=True)
    p.add_argument("--b-password", required=True)
    p.add_argument("--timeout", type=float, default=30.0, help="overall time limit in seconds")
    p.add_argument("--debug", action="store_true", help="slixmpp debug logging")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.CRITICAL)

    done = []

    def report(ok, detail):
        step = STEPS[len(done)]
        done.append(ok)
        print(f"{'PASS' if ok else 'FAIL'}: {step}{f' ({detail})' if detail else ''}", flush=True)

    try:
        asyncio.run(asyncio.wait_for(run(args, report), args.timeout + 5))
    except (asyncio.TimeoutError, IqTimeout):
        if len(done) < len(STEPS):
            report(False, f"timed out (overall limit {args.timeout:.0f} s)")
    except IqError as e:
        if len(done) < len(STEPS):
            report(False, f"error reply: {e.iq['error']['condition']}")
    except PresenceError as e:
        if len(done) < len(STEPS):
            report(False, f"presence error: {e.presence['error']['condition']}")
    except (Exception, ssl.SSLError) as e:  # noqa: BLE001 - every failure becomes a FAIL line
        if len(done) < len(STEPS):
            report(False, f"{type(e).__name__}: {e}")
    while len(done) < len(STEPS):
        report(False, "not run: an earlier step failed")
    return 0 if all(done) else 1


if __name__ == "__main__":
    sys.exit(main())
