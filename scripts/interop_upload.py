#!/usr/bin/env python3
"""Third-party file upload check: slixmpp's XEP-0363 plugin uploads a file to a running Oxpecker.

Run by scripts/interop (which installs slixmpp and aiohttp, starts the server and creates the
accounts). A logs in, finds the upload service through disco (the server's disco#items, then
the store/file identity and the max-file-size form), uploads a file with the plugin's own
HTTP PUT, fetches the GET URL back with urllib and compares bytes and type, and asks for a slot
larger than the limit (file-too-large). Prints one `PASS: step` / `FAIL: step (reason)` line
per step (as many lines whatever fails) and exits 0 only if every step passed in time.
"""

import argparse
import asyncio
import io
import logging
import os
import ssl
import sys
import urllib.request
from pathlib import Path

import slixmpp
from slixmpp.exceptions import IqError

STEPS = [
    "upload: A logs in",
    "upload: disco finds the upload service (store/file, max-file-size)",
    "upload: xep_0363 uploads a file (slot, HTTP PUT)",
    "upload: the GET URL serves the same bytes and type",
    "upload: a slot larger than max-file-size is refused with <file-too-large/>",
]

NS = "urn:xmpp:http:upload:0"


class Client(slixmpp.ClientXMPP):
    """A slixmpp client with the upload plugin, connecting to a fixed address, trusting one CA."""

    def __init__(self, jid, password, host, port, ca_file):
        super().__init__(jid, password)
        self.fixed = (host, port)
        self.ca_certs = Path(ca_file)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0363")
        self.started = asyncio.get_running_loop().create_future()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_auth", lambda *_: self._fail("authentication failed"))
        self.add_event_handler("connection_failed", lambda e: self._fail(f"connection failed: {e}"))

    async def get_dns_records(self, domain, port=None):
        """No DNS: always connect to the given address (the certificate is still checked)."""
        return [(domain, self.fixed[0], self.fixed[1])]

    def _on_start(self, _event):
        if not self.started.done():
            self.send_presence()
            self.started.set_result(True)

    def _fail(self, reason):
        if not self.started.done():
            self.started.set_exception(RuntimeError(reason))


def fetch(url):
    """GET `url` (the loopback HTTP listener, no proxy): (status, content type, body)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


async def run(args, results):
    a = Client(args.jid, args.password, args.host, args.port, args.ca)
    try:
        a.connect()
        await asyncio.wait_for(a.started, args.timeout)
        results[STEPS[0]] = None

        plugin = a["xep_0363"]
        info = await plugin.find_upload_service(domain=slixmpp.JID(args.domain), timeout=args.timeout)
        if info is None:
            raise RuntimeError("no upload service found")
        service = info["from"]
        plugin.upload_service = service
        limit = None
        for form in info["disco_info"].iterables:
            values = form["values"]
            if values.get("FORM_TYPE") == [NS]:
                limit = int(values["max-file-size"])
        if limit is None or str(service) != f"upload.{args.domain}":
            raise RuntimeError(f"service {service}, max-file-size {limit}")
        plugin.max_file_size = limit
        results[STEPS[1]] = None

        data = os.urandom(48 * 1024) + "grüße from slixmpp\n".encode()
        url = await plugin.upload_file(
            "interop grüße.txt",
            size=len(data),
            content_type="text/plain",
            input_file=io.BytesIO(data),
            timeout=args.timeout,
        )
        if not url.startswith("http"):
            raise RuntimeError(f"odd GET URL {url}")
        results[STEPS[2]] = None

        status, ctype, body = await asyncio.get_running_loop().run_in_executor(None, fetch, url)
        if status != 200 or ctype != "text/plain" or body != data:
            raise RuntimeError(f"status {status}, type {ctype}, {len(body)} bytes of {len(data)}")
        results[STEPS[3]] = None

        try:
            await plugin.request_slot(service, "huge.bin", limit + 1, "application/octet-stream",
                                      timeout=args.timeout)
            raise RuntimeError("a slot over the limit was granted")
        except IqError as e:
            err = e.iq["error"]
            too_large = err.xml.find(f"{{{NS}}}file-too-large")
            got = too_large.findtext(f"{{{NS}}}max-file-size") if too_large is not None else None
            if err["condition"] != "not-acceptable" or got != str(limit):
                raise RuntimeError(f"error {err['condition']}, max-file-size {got}")
        results[STEPS[4]] = None
    finally:
        a.disconnect()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--debug", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.CRITICAL)
    results = {}

    async def bounded():
        await asyncio.wait_for(run(args, results), args.timeout * 2)

    reason = None
    try:
        asyncio.run(bounded())
    except Exception as e:  # noqa: BLE001 - every failure becomes a FAIL line
        reason = f"{type(e).__name__}: {e}"
    ok = True
    for step in STEPS:
        if step in results:
            print(f"PASS: {step}")
        else:
            ok = False
            print(f"FAIL: {step} ({reason or 'not reached'})")
            reason = "not reached after an earlier failure"
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
