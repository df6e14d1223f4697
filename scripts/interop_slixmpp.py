#!/usr/bin/env python3
"""Third-party client check: two slixmpp clients against a running Oxpecker server.

Run by scripts/interop (which installs slixmpp, starts the server and creates the accounts).
Prints one `PASS: step` / `FAIL: step (reason)` line per step; steps that cannot run because
an earlier one failed are reported as FAIL too, so the number of steps is always the same.
Exits 0 only if every step passed within the overall time limit.
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
from slixmpp.exceptions import IqError, IqTimeout

STEPS = [
    "A logs in (STARTTLS with verified certificate, SASL, bind)",
    "B logs in (STARTTLS with verified certificate, SASL, bind)",
    "A and B send initial presence",
    "A pings the server (XEP-0199)",
    "A disco#info on the server lists urn:xmpp:ping (XEP-0030)",
    "A sends a chat message to B's bare JID; B receives it from A's full JID",
    "B replies to A's full JID; A receives it",
    "A and B disconnect cleanly",
]


class Client(slixmpp.ClientXMPP):
    """A slixmpp client that connects to a fixed address and trusts one CA file."""

    def __init__(self, jid, password, host, port, ca_file):
        super().__init__(jid, password)
        self.fixed = (host, port)
        # Verify the server certificate against the given CA file, for the JID's domain
        # (slixmpp uses the domain as the TLS server name and checks the hostname).
        self.ca_certs = Path(ca_file)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199", {"keepalive": False})
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.inbox = asyncio.Queue()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_auth", lambda *_: self._fail("authentication failed"))
        self.add_event_handler("ssl_invalid_chain", lambda e: self._fail(f"certificate not trusted: {e}"))
        self.add_event_handler("connection_failed", lambda e: self._fail(f"connection failed: {e}"))
        self.add_event_handler("disconnected", lambda *_: self._fail("disconnected before session start"))
        self.add_event_handler("message", self._on_message)

    async def get_dns_records(self, domain, port=None):
        """No DNS: always connect to the given address (the certificate is still checked for `domain`)."""
        return [(domain, self.fixed[0], self.fixed[1])]

    def _on_start(self, _event):
        if not self.started.done():
            self.started.set_result(True)

    def _fail(self, reason):
        if not self.started.done():
            self.started.set_exception(RuntimeError(reason))

    def _on_message(self, msg):
        if msg["type"] in ("chat", "normal"):
            self.inbox.put_nowait(msg)


async def expect_message(client, body, timeout):
    """Waits for a message with exactly `body` (others are ignored)."""
    while True:
        msg = await asyncio.wait_for(client.inbox.get(), timeout)
        if msg["body"] == body:
            return msg


async def run(args, report):
    deadline = time.monotonic() + args.timeout

    def left():
        return max(0.1, deadline - time.monotonic())

    a = Client(args.a_jid, args.a_password, args.host, args.port, args.ca)
    b = Client(args.b_jid, args.b_password, args.host, args.port, args.ca)
    clients = [a, b]
    try:
        # 1, 2: logins. force_starttls: refuse to continue without TLS.
        for name, c in (("A", a), ("B", b)):
            c.connect(address=(args.host, args.port), force_starttls=True)
            await asyncio.wait_for(c.started, left())
            report(True, f"bound as {c.boundjid.full}")

        # 3: initial presence (delivery to B's bare JID below depends on it).
        a.send_presence()
        b.send_presence()
        await asyncio.sleep(0.2)
        report(True, "sent")

        # 4: ping. send_ping raises IqError on an error reply (ping() would hide it for the own host).
        t0 = time.monotonic()
        await a["xep_0199"].send_ping(args.domain, timeout=left())
        report(True, f"rtt {1000 * (time.monotonic() - t0):.1f} ms")

        # 5: disco#info on the server.
        info = await a["xep_0030"].get_info(jid=args.domain, timeout=left(), cached=False)
        features = info["disco_info"]["features"]
        if "urn:xmpp:ping" not in features:
            raise RuntimeError(f"urn:xmpp:ping missing from features {sorted(features)}")
        report(True, f"{len(features)} features")

        # 6: A -> B (bare JID).
        nonce = uuid.uuid4().hex[:8]
        hello = f"hello from A {nonce}"
        a.send_message(mto=b.boundjid.bare, mbody=hello, mtype="chat")
        got = await expect_message(b, hello, left())
        if got["from"] != a.boundjid:
            raise RuntimeError(f"from is {got['from']}, expected {a.boundjid.full}")
        report(True, f"from {got['from']}")

        # 7: B -> A (the full JID the message came from).
        reply = f"reply from B {nonce}"
        b.send_message(mto=got["from"], mbody=reply, mtype="chat")
        got = await expect_message(a, reply, left())
        if got["from"] != b.boundjid:
            raise RuntimeError(f"from is {got['from']}, expected {b.boundjid.full}")
        report(True, f"from {got['from']}")

        # 8: clean disconnect.
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
        reason = f"timed out (overall limit {args.timeout:.0f} s)"
        if len(done) < len(STEPS):
            report(False, reason)
    except IqError as e:
        if len(done) < len(STEPS):
            report(False, f"error reply: {e.iq['error']['condition']}")
    except (Exception, ssl.SSLError) as e:  # noqa: BLE001 - every failure becomes a FAIL line
        if len(done) < len(STEPS):
            report(False, f"{type(e).__name__}: {e}")
    while len(done) < len(STEPS):
        report(False, "not run: an earlier step failed")
    return 0 if all(done) else 1


if __name__ == "__main__":
    sys.exit(main())
