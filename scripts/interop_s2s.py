#!/usr/bin/env python3
"""Federation check: a slixmpp client on Oxpecker and one on Prosody talk across the s2s link.

Run by scripts/interop-s2s (which installs Prosody and slixmpp, makes the certificates, starts
both servers and creates the accounts). Prints one `PASS: step` / `FAIL: step (reason)` line per
step (steps after a failure are reported as FAIL too) and exits 0 only if every step passed.
"""

import argparse
import asyncio
import logging
import sys
import time
import uuid
from pathlib import Path

import slixmpp

STEPS = [
    "Oxpecker user logs in",
    "Prosody user logs in",
    "both send initial presence",
    "message Oxpecker -> Prosody",
    "message Prosody -> Oxpecker",
    "subscription handshake ends in 'both' on both rosters",
    "the contact's presence arrives across servers",
    "both disconnect cleanly",
]


class Client(slixmpp.ClientXMPP):
    """A client connecting to a fixed address, trusting one CA file, approving subscriptions."""

    def __init__(self, jid, password, host, port, ca_file):
        super().__init__(jid, password)
        self.fixed = (host, port)
        self.ca_certs = Path(ca_file)
        self.auto_authorize = True
        self.auto_subscribe = True
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.inbox = asyncio.Queue()
        self.seen = asyncio.Queue()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_auth", lambda *_: self._fail("authentication failed"))
        self.add_event_handler("connection_failed", lambda e: self._fail(f"connection failed: {e}"))
        self.add_event_handler("message", self._on_message)
        self.add_event_handler("presence_available", lambda p: self.seen.put_nowait(p))

    async def get_dns_records(self, domain, port=None):
        return [(domain, self.fixed[0], self.fixed[1])]

    async def _on_start(self, _event):
        await self.get_roster()
        if not self.started.done():
            self.started.set_result(True)

    def _fail(self, reason):
        if not self.started.done():
            self.started.set_exception(RuntimeError(reason))

    def _on_message(self, msg):
        if msg["type"] in ("chat", "normal"):
            self.inbox.put_nowait(msg)


async def expect(queue, pred, timeout):
    while True:
        item = await asyncio.wait_for(queue.get(), timeout)
        if pred(item):
            return item


async def run(args, report):
    deadline = time.monotonic() + args.timeout

    def left():
        return max(0.1, deadline - time.monotonic())

    o = Client(args.o_jid, args.password, args.o_host, args.o_port, args.ca)
    p = Client(args.p_jid, args.password, args.p_host, args.p_port, args.ca)
    clients = [o, p]
    try:
        for c in clients:
            c.connect(address=c.fixed, force_starttls=True)
            await asyncio.wait_for(c.started, left())
            report(True, f"bound as {c.boundjid.full}")
        for c in clients:
            c.send_presence()
        await asyncio.sleep(0.2)
        report(True, "sent")
        nonce = uuid.uuid4().hex[:8]
        for src, dst in ((o, p), (p, o)):
            body = f"from {src.boundjid.bare} {nonce}"
            src.send_message(mto=dst.boundjid.bare, mbody=body, mtype="chat")
            got = await expect(dst.inbox, lambda m, b=body: m["body"] == b, left())
            if got["from"].bare != src.boundjid.bare:
                raise RuntimeError(f"from is {got['from']}")
            report(True, f"from {got['from']}")
        o.send_presence(pto=p.boundjid.bare, ptype="subscribe")
        while time.monotonic() < deadline:
            so = o.client_roster[p.boundjid.bare]["subscription"]
            sp = p.client_roster[o.boundjid.bare]["subscription"]
            if so == "both" and sp == "both":
                break
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError(f"subscriptions are {so!r} / {sp!r}")
        report(True, "both / both")
        p.send_presence(pstatus=f"here {nonce}")
        await expect(o.seen, lambda pr: pr["from"].bare == p.boundjid.bare, left())
        report(True, f"{p.boundjid.bare} available at {o.boundjid.bare}")
        for c in clients:
            await asyncio.wait_for(c.disconnect(wait=2.0), left())
        clients = []
        report(True, "")
    finally:
        for c in clients:
            try:
                c.abort()
            except Exception:  # noqa: BLE001 - best effort on the failure path
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--o-jid", required=True)
    ap.add_argument("--o-host", required=True)
    ap.add_argument("--o-port", type=int, required=True)
    ap.add_argument("--p-jid", required=True)
    ap.add_argument("--p-host", required=True)
    ap.add_argument("--p-port", type=int, required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.CRITICAL)
    done = []

    def report(ok, detail):
        step = STEPS[len(done)]
        done.append(ok)
        print(f"{'PASS' if ok else 'FAIL'}: {step}" + (f" ({detail})" if detail else ""), flush=True)

    async def go():
        try:
            await run(args, report)
        except Exception as e:  # noqa: BLE001 - every failure becomes a FAIL line
            reason = f"{type(e).__name__}: {e}"
            while len(done) < len(STEPS):
                report(False, reason)
                reason = "not run"

    asyncio.run(go())
    sys.exit(0 if all(done) and len(done) == len(STEPS) else 1)


if __name__ == "__main__":
    main()
