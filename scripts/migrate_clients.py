#!/usr/bin/env python3
"""slixmpp clients for scripts/migrate-test.

`seed`: logs in to the old server (Prosody), puts a contact with a name and a group on the
roster, publishes a vCard and sends a message to an offline account, then disconnects.
`verify`: logs in to Oxpecker over STARTTLS with the old password (whatever SCRAM family the
account came with) and checks its roster, its vCard and that the offline message arrives.
Prints one `PASS: step` / `FAIL: step (reason)` line per check; exits 0 only if all passed.
"""

import argparse
import asyncio
import logging
import sys
import time

import slixmpp


class Client(slixmpp.ClientXMPP):
    """A client on a fixed address; fails only when every SASL mechanism was refused."""

    def __init__(self, jid, password, host, port, ca_file=None):
        super().__init__(jid, password)
        self.fixed = (host, port)
        if ca_file:
            self.ca_certs = ca_file
        self.register_plugin("xep_0054")
        self.register_plugin("xep_0199")
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.inbox = asyncio.Queue()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("no_auth", lambda *_: self._fail("authentication failed"))
        self.add_event_handler("connection_failed", lambda e: self._fail(f"connection failed: {e}"))
        self.add_event_handler("message", lambda m: self.inbox.put_nowait(m))

    async def get_dns_records(self, domain, port=None):
        return [(domain, self.fixed[0], self.fixed[1])]

    async def _on_start(self, _event):
        if not self.started.done():
            self.started.set_result(True)

    def _fail(self, reason):
        if not self.started.done():
            self.started.set_exception(RuntimeError(reason))


async def seed(args, report):
    c = Client(args.jid, args.password, args.host, args.port)
    c.connect(address=c.fixed, disable_starttls=True, force_starttls=False)
    await asyncio.wait_for(c.started, args.timeout)
    report(True, f"bound as {c.boundjid.full}")
    await c.update_roster(args.contact, name=args.name, groups=[args.group], timeout=args.timeout)
    vcard = c["xep_0054"].stanza.VCardTemp()
    vcard["FN"] = args.fn
    await c["xep_0054"].publish_vcard(vcard, timeout=args.timeout)
    c.send_message(mto=args.contact, mbody=args.body, mtype="chat")
    await c["xep_0199"].ping(timeout=args.timeout)
    report(True, f"{args.contact} ({args.group}), FN {args.fn!r}, message to {args.contact}")
    await asyncio.wait_for(c.disconnect(wait=2.0), args.timeout)


async def verify(args, report):
    c = Client(args.jid, args.password, args.host, args.port, args.ca)
    c.connect(address=c.fixed, force_starttls=True)
    await asyncio.wait_for(c.started, args.timeout)
    report(True, f"bound as {c.boundjid.full} with {c['feature_mechanisms'].mech.name}")
    await c.get_roster(timeout=args.timeout)
    if not c.client_roster.has_jid(args.contact):
        raise RuntimeError(f"roster has {list(c.client_roster)}")
    groups = c.client_roster[args.contact]["groups"]
    if args.group not in groups:
        raise RuntimeError(f"{args.contact} is in {groups}")
    report(True, f"{args.contact} in {groups}")
    got = await c["xep_0054"].get_vcard(c.boundjid.bare, timeout=args.timeout)
    fn = got["vcard_temp"]["FN"]
    if fn != args.fn:
        raise RuntimeError(f"FN is {fn!r}")
    report(True, f"FN {fn!r}")
    c.send_presence()
    deadline = time.monotonic() + args.timeout
    while True:
        msg = await asyncio.wait_for(c.inbox.get(), max(0.1, deadline - time.monotonic()))
        if msg["body"] == args.body:
            break
    report(True, f"from {msg['from']}: {msg['body']!r}")
    await asyncio.wait_for(c.disconnect(wait=2.0), args.timeout)


STEPS = {
    "seed": ["logs in to the old server", "roster item, vCard and an offline message"],
    "verify": [
        "logs in to Oxpecker with the old password",
        "sees its roster (contact and group)",
        "sees its vCard",
        "receives its offline message",
    ],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("mode", choices=sorted(STEPS))
    ap.add_argument("--jid", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ca")
    ap.add_argument("--contact", required=True)
    ap.add_argument("--name", default="")
    ap.add_argument("--group", required=True)
    ap.add_argument("--fn", required=True)
    ap.add_argument("--body", required=True)
    ap.add_argument("--label", default="")
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.CRITICAL)
    steps = STEPS[args.mode]
    done = []

    def report(ok, detail):
        step = steps[len(done)]
        done.append(ok)
        prefix = f"{args.label}: " if args.label else ""
        print(f"{'PASS' if ok else 'FAIL'}: {prefix}{args.jid} {step}" + (f" ({detail})" if detail else ""), flush=True)

    async def go():
        try:
            await (seed if args.mode == "seed" else verify)(args, report)
        except Exception as e:  # noqa: BLE001 - every failure becomes a FAIL line
            reason = f"{type(e).__name__}: {e}"
            while len(done) < len(steps):
                report(False, reason)
                reason = "not run"

    asyncio.run(go())
    sys.exit(0 if all(done) and len(done) == len(steps) else 1)


if __name__ == "__main__":
    main()
