#!/usr/bin/env python3
"""The slixmpp side of scripts/browser: logs in over TCP (STARTTLS, verified certificate), sends
presence, prints `READY`, then answers every chat message with `echo: <body>` and prints
`GOT <from> <body>` for each, and `OOB <from> <url>` for one carrying a XEP-0066
`<x xmlns='jabber:x:oob'><url/>` (a shared file). Runs until killed or --timeout seconds pass.
"""

import argparse
import asyncio
import sys
from pathlib import Path

import slixmpp


class Echo(slixmpp.ClientXMPP):
    """Answers chat messages; connects to a fixed address and trusts one CA file."""

    def __init__(self, jid, password, host, port, ca_file):
        # Plain SCRAM: slixmpp picks -PLUS when offered but, on TLS 1.3 with a Python whose ssl
        # module has no tls-exporter (3.11 here), it has no binding to send and the server
        # rightly refuses the exchange.
        super().__init__(jid, password, sasl_mech="SCRAM-SHA-256")
        self.fixed = (host, port)
        self.ca_certs = Path(ca_file)
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("message", self._on_message)
        self.add_event_handler("failed_auth", lambda *_: self._bail("authentication failed"))
        self.add_event_handler("connection_failed", lambda e: self._bail(f"connection failed: {e}"))

    async def get_dns_records(self, domain, port=None):
        return [(domain, self.fixed[0], self.fixed[1])]

    def _bail(self, reason):
        print(f"ERROR {reason}", flush=True)
        sys.exit(1)

    async def _on_start(self, _event):
        self.send_presence()
        print("READY", flush=True)

    def _on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            print(f"GOT {msg['from']} {msg['body']}", flush=True)
            oob = msg.xml.find("{jabber:x:oob}x/{jabber:x:oob}url")
            if oob is not None and (oob.text or "").strip():
                print(f"OOB {msg['from']} {oob.text.strip()}", flush=True)
            msg.reply(f"echo: {msg['body']}").send()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--timeout", type=float, default=300)
    a = p.parse_args()
    bot = Echo(a.jid, a.password, a.host, a.port, a.ca)
    bot.connect()
    await asyncio.sleep(a.timeout)


if __name__ == "__main__":
    asyncio.run(main())
