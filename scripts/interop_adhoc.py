#!/usr/bin/env python3
"""Third-party client check: XEP-0133 admin commands with slixmpp's XEP-0050 plugin.

Run by scripts/interop (which installs slixmpp, starts the server with the admin_adhoc module,
and creates an admin with `oxpecker user add --role admin`). Prints one `PASS: step` /
`FAIL: step (reason)` line per step, always the same number; exits 0 only if all passed.
"""

import argparse
import asyncio
import logging
import ssl
import sys
import time
from pathlib import Path

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

ADMIN = "http://jabber.org/protocol/admin"
DATA = "{jabber:x:data}"

STEPS = [
    "admin lists the server's ad-hoc commands (XEP-0050 disco#items)",
    "admin runs get-registered-users-num (XEP-0133) and gets the count",
    "a non-admin running it gets forbidden",
]


class Client(slixmpp.ClientXMPP):
    """A slixmpp client with the ad-hoc commands plugin, fixed address, one trusted CA file."""

    def __init__(self, jid, password, host, port, ca_file):
        super().__init__(jid, password)
        self.fixed = (host, port)
        self.ca_certs = Path(ca_file)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0050")
        self.started = asyncio.get_running_loop().create_future()
        self.add_event_handler("session_start", lambda _e: self.started.done() or self.started.set_result(True))
        self.add_event_handler("failed_auth", lambda *_: self._fail("authentication failed"))
        self.add_event_handler("connection_failed", lambda e: self._fail(f"connection failed: {e}"))

    async def get_dns_records(self, domain, port=None):
        return [(domain, self.fixed[0], self.fixed[1])]

    def _fail(self, reason):
        if not self.started.done():
            self.started.set_exception(RuntimeError(reason))


async def run(args, report):
    deadline = time.monotonic() + args.timeout

    def left():
        return max(0.1, deadline - time.monotonic())

    admin = Client(args.admin_jid, args.admin_password, args.host, args.port, args.ca)
    user = Client(args.user_jid, args.user_password, args.host, args.port, args.ca)
    clients = [admin, user]
    try:
        for c in clients:
            c.connect(address=(args.host, args.port), force_starttls=True)
            await asyncio.wait_for(c.started, left())

        items = await admin["xep_0050"].get_commands(jid=args.domain, timeout=left())
        nodes = [i[1] for i in items["disco_items"]["items"]]
        if f"{ADMIN}#get-registered-users-num" not in nodes:
            raise RuntimeError(f"command missing from {nodes}")
        report(True, f"{len(nodes)} commands")

        iq = await admin["xep_0050"].send_command(
            jid=args.domain, node=f"{ADMIN}#get-registered-users-num", action="execute", timeout=left()
        )
        if iq["command"]["status"] != "completed":
            raise RuntimeError(f"status {iq['command']['status']}")
        value = iq.xml.find(f".//{DATA}field[@var='registeredusersnum']/{DATA}value")
        if value is None or not value.text or int(value.text) < 2:
            raise RuntimeError(f"no count in {iq}")
        report(True, f"{value.text} registered users")

        try:
            await user["xep_0050"].send_command(
                jid=args.domain, node=f"{ADMIN}#get-registered-users-num", action="execute", timeout=left()
            )
            raise RuntimeError("a non-admin was allowed")
        except IqError as e:
            cond = e.iq["error"]["condition"]
            if cond != "forbidden":
                raise RuntimeError(f"error {cond}, expected forbidden") from e
        report(True, "forbidden")

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
    p.add_argument("--ca", required=True)
    p.add_argument("--admin-jid", required=True)
    p.add_argument("--admin-password", required=True)
    p.add_argument("--user-jid", required=True)
    p.add_argument("--user-password", required=True)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--debug", action="store_true")
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
    except (Exception, ssl.SSLError) as e:  # noqa: BLE001 - every failure becomes a FAIL line
        if len(done) < len(STEPS):
            report(False, f"{type(e).__name__}: {e}")
    while len(done) < len(STEPS):
        report(False, "not run: an earlier step failed")
    return 0 if all(done) else 1


if __name__ == "__main__":
    sys.exit(main())
