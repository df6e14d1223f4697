#!/usr/bin/env python3
"""slixmpp clients for scripts/migrate-test.

`seed`: logs in to the old server (Prosody), puts a contact with a name and a group on the
roster, publishes a vCard and sends a message to an offline account, then disconnects.
`verify`: logs in to Oxpecker over STARTTLS with the old password (whatever SCRAM family the
account came with) and checks its roster, its vCard and that the offline message arrives.
With `--nick`, `--bookmark` and `--room`, `seed` also publishes a PEP nick (XEP-0172), keeps a
XEP-0048 bookmark in private XML (XEP-0049) and creates a persistent room with the contact as a
member; `verify` checks the nick, the bookmark as a XEP-0402 item, and joins the room as owner.
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
        for plugin in ("xep_0045", "xep_0048", "xep_0049", "xep_0060", "xep_0163", "xep_0172"):
            self.register_plugin(plugin)
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
    if args.nick:
        await c["xep_0172"].publish_nick(args.nick, timeout=args.timeout)
        report(True, f"PEP nick {args.nick!r}")
    if args.bookmark:
        bm = c["xep_0048"].stanza.Bookmarks()
        bm.add_conference(args.bookmark, args.nick or "me", name="Old bookmark", autojoin=True)
        await c["xep_0048"].set_bookmarks(bm, method="xep_0049", timeout=args.timeout)
        report(True, f"private XML bookmark of {args.bookmark}")
    if args.room:
        muc = c["xep_0045"]
        await muc.join_muc_wait(args.room, args.nick or "owner", timeout=args.timeout)
        form = c["xep_0004"].make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
        form.add_field(var="muc#roomconfig_persistentroom", ftype="boolean", value=True)
        form.add_field(var="muc#roomconfig_roomname", ftype="text-single", value=args.room_name)
        await muc.set_room_config(args.room, form, timeout=args.timeout)
        await muc.set_affiliation(args.room, "member", jid=slixmpp.JID(args.contact))
        muc.leave_muc(args.room, args.nick or "owner")
        await c["xep_0199"].ping(timeout=args.timeout)
        report(True, f"{args.room} ({args.room_name!r}), {args.contact} member")
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
    if args.nick:
        items = await c["xep_0060"].get_items(c.boundjid.bare, "http://jabber.org/protocol/nick", timeout=args.timeout)
        nicks = [i.xml.find("{http://jabber.org/protocol/nick}nick") for i in items["pubsub"]["items"]]
        nicks = [n.text for n in nicks if n is not None]
        if args.nick not in nicks:
            raise RuntimeError(f"PEP nick items are {nicks}")
        report(True, f"PEP nick {args.nick!r}")
    if args.bookmark:
        items = await c["xep_0060"].get_items(c.boundjid.bare, "urn:xmpp:bookmarks:1", timeout=args.timeout)
        ids = [i["id"] for i in items["pubsub"]["items"]]
        if args.bookmark not in ids:
            raise RuntimeError(f"urn:xmpp:bookmarks:1 items are {ids}")
        report(True, f"urn:xmpp:bookmarks:1 item {args.bookmark}")
    if args.room:
        muc = c["xep_0045"]
        joined = await muc.join_muc_wait(args.room, args.nick or "owner", timeout=args.timeout)
        pres = joined[0] if isinstance(joined, tuple) else joined  # (presence, history) in 1.8
        aff = pres["muc"]["affiliation"]
        if aff != "owner":
            raise RuntimeError(f"joined {args.room} as {aff}")
        members = await muc.get_affiliation_list(args.room, "member", timeout=args.timeout)
        if args.contact not in [str(m) for m in members]:
            raise RuntimeError(f"members of {args.room} are {members}")
        info = await c["xep_0030"].get_info(args.room, timeout=args.timeout)
        names = [i[3] for i in info["disco_info"]["identities"]]
        if args.room_name not in names:
            raise RuntimeError(f"{args.room} is named {names}")
        report(True, f"{args.room} ({args.room_name!r}): owner, {args.contact} member")
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
    ap.add_argument("--nick", default="", help="a PEP nick (XEP-0172) to publish / expect")
    ap.add_argument("--bookmark", default="", help="a room bookmarked in private XML / expected in XEP-0402")
    ap.add_argument("--room", default="", help="a persistent room to create (owner, contact member) / join")
    ap.add_argument("--room-name", default="Moved room")
    ap.add_argument("--label", default="")
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.CRITICAL)
    steps = list(STEPS[args.mode])
    extra = {
        "seed": ["publishes a PEP nick", "keeps a bookmark in private XML", "creates a persistent room"],
        "verify": ["sees its PEP nick", "sees its bookmark in XEP-0402 PEP", "joins its room as owner"],
    }[args.mode]
    steps += [step for step, on in zip(extra, [args.nick, args.bookmark, args.room]) if on]
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
