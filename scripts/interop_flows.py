#!/usr/bin/env python3
"""IM and mobile flows with slixmpp against a running Oxpecker server (issues #3 and #6).

Run by scripts/interop after scripts/interop_slixmpp.py, against the same server, with four
accounts of its own (created with the CLI by scripts/interop), all with one password:

- A (two resources) and B: roster, subscription handshake, presence, disco, vCard, PEP,
  blocking, offline delivery and carbons;
- SM: stream management (abrupt disconnect, then resumption);
- MAM: the partner A exchanges messages with before querying its archive.

Every check uses slixmpp's own plugins where one exists and prints one line, `PASS: check
(detail)`, `FAIL: check (reason)` or `SKIP: check (reason)` (only PEP may skip, when the account
does not advertise `http://jabber.org/protocol/pubsub#publish`). A check that fails does not
stop the others; a check that cannot run because the clients could not log in is a FAIL, so the
number of lines is always the same. Each check has its own time limit and the whole script an
overall one. Exits 0 only if nothing failed.
"""

import argparse
import asyncio
import logging
import socket
import ssl
import struct
import sys
import time
import uuid
from pathlib import Path

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

NS_CLIENT = "jabber:client"
NS_PUBSUB_PUBLISH = "http://jabber.org/protocol/pubsub#publish"
NS_TUNE = "http://jabber.org/protocol/tune"
NS_MAM = "urn:xmpp:mam:2"
# Server disco#info features the issues #3 and #6 modules advertise on the host.
SERVER_FEATURES = [
    "http://jabber.org/protocol/disco#info",
    "http://jabber.org/protocol/disco#items",
    "urn:xmpp:ping",
    "urn:xmpp:time",
    "jabber:iq:version",
    "jabber:iq:last",
    "vcard-temp",
    "jabber:iq:private",
    "urn:xmpp:blocking",
    "msgoffline",
    "urn:xmpp:carbons:2",
]
MAM_MESSAGES = 30
MAM_PAGE = 10


class Skip(Exception):
    """A check that does not apply to this server (printed as SKIP, counted as neither)."""


class Missing(Exception):
    """What a check waited for did not arrive in time."""


class Box:
    """Everything of one kind a client received, in order, with a way to wait for a match."""

    def __init__(self, owner, kind):
        self.owner = owner  # returns the owner's JID (for messages)
        self.kind = kind
        self.items = []
        self._changed = asyncio.Event()

    def put(self, item):
        self.items.append(item)
        self._changed.set()

    def mark(self):
        return len(self.items)

    def since(self, mark, pred=lambda _: True):
        return [x for x in self.items[mark:] if pred(x)]

    async def wait(self, pred, timeout, mark=0, what=None):
        """The first item from `mark` on that matches `pred`, waiting up to `timeout` seconds;
        raises Missing (naming `what`) if none came."""
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()
            for x in self.items[mark:]:
                if pred(x):
                    return x
            left = deadline - time.monotonic()
            if left <= 0:
                raise Missing(f"{self.owner()} got no {what or 'matching ' + self.kind} within {timeout:g} s")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass


class Client(slixmpp.ClientXMPP):
    """A slixmpp client on a fixed address, trusting one CA file, recording what it receives."""

    def __init__(self, jid, password, args, sm=False):
        super().__init__(jid, password)
        self.args = args
        self.ca_certs = Path(args.ca)
        self.response_timeout = 10
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199", {"keepalive": False})
        for plugin in ("xep_0054", "xep_0060", "xep_0115", "xep_0163", "xep_0118", "xep_0191",
                       "xep_0203", "xep_0280", "xep_0297", "xep_0313"):
            self.register_plugin(plugin)
        if sm:
            # Ask for an ack after every stanza so the server's counters move with the test.
            self.register_plugin("xep_0198", {"window": 1})
        # Subscriptions are answered by the checks, never automatically.
        self.auto_authorize = None
        self.auto_subscribe = False
        me = lambda: self.boundjid.full  # noqa: E731
        self.messages = Box(me, "message")  # every <message/> stanza (with or without body)
        self.presences = Box(me, "presence")  # every <presence/> stanza
        self.pushes = Box(me, "roster push")  # roster pushes (iq type set)
        self.events = Box(me, "event")  # (name, data) of session events
        self.caps_queries = Box(me, "caps query")  # disco#info queries for a caps node
        self.register_handler(Callback("flows: messages", MatchXPath(f"{{{NS_CLIENT}}}message"),
                                       self.messages.put))
        self.register_handler(Callback("flows: presences", MatchXPath(f"{{{NS_CLIENT}}}presence"),
                                       self.presences.put))
        self.register_handler(Callback(
            "flows: caps queries",
            MatchXPath(f"{{{NS_CLIENT}}}iq/{{http://jabber.org/protocol/disco#info}}query"),
            self._on_disco_query))
        self.add_event_handler("roster_update",
                               lambda iq: iq["type"] == "set" and self.pushes.put(iq))
        for name in ("session_start", "session_resumed", "sm_enabled", "sm_failed", "failed_auth",
                     "connection_failed", "disconnected", "ssl_invalid_chain", "user_tune_publish"):
            self.add_event_handler(name, lambda data, name=name: self.events.put((name, data)))

    async def get_dns_records(self, domain, port=None):
        """No DNS: always the given address (the certificate is still checked for `domain`)."""
        return [(domain, self.args.host, self.args.port)]

    def _on_disco_query(self, iq):
        if iq["type"] == "get" and "#" in (iq["disco_info"]["node"] or ""):
            self.caps_queries.put(iq)

    async def login(self, timeout):
        """Connects (STARTTLS required) and waits for the session (or a resumption)."""
        mark = self.events.mark()
        self.connect(address=(self.args.host, self.args.port), force_starttls=True)
        name, data = await self.events.wait(
            lambda e: e[0] in ("session_start", "session_resumed", "failed_auth",
                               "connection_failed", "ssl_invalid_chain", "disconnected"),
            timeout, mark, "session start, resumption or failure")
        if name not in ("session_start", "session_resumed"):
            raise RuntimeError(f"{self.boundjid.bare}: {name} {data or ''}".strip())
        return name

    async def close(self):
        if self.transport:
            await asyncio.wait_for(self.disconnect(wait=2.0), 5)


def body_is(body):
    """Matches a message with a top-level body `body`."""
    return lambda m: m["body"] == body


def carbon(kind, body):
    """Matches a XEP-0280 carbon (`received` or `sent`) of a message with `body`; looks at the
    XML first, as reading m["carbon_received"] would create the element."""
    return lambda m: (m.xml.find(f"{{urn:xmpp:carbons:2}}{kind}") is not None
                      and m[f"carbon_{kind}"]["body"] == body)


async def roundtrip(client):
    """A ping to the server: everything the client sent before has been processed."""
    await client["xep_0199"].send_ping(client.boundjid.domain, timeout=10)


def raw_roster_get(client, ver=None):
    iq = client.make_iq_get()
    iq.enable("roster")
    if ver is not None:
        iq["roster"]["ver"] = ver
    return iq.send(timeout=10)


def push_for(jid, pred=lambda _item: True):
    """Matches a roster push carrying an item for `jid` that satisfies `pred`."""
    jid = str(jid)

    def match(iq):
        items = iq["roster"]["items"]
        return jid in {str(j) for j in items} and pred(
            next(v for j, v in items.items() if str(j) == jid))

    return match


class Flows:
    def __init__(self, args):
        self.args = args
        self.nonce = uuid.uuid4().hex[:8]
        self.a = self.b = self.sm = self.mam = None
        self.clients = []
        self.pep_features = None

    def client(self, jid, sm=False):
        c = Client(jid, self.args.password, self.args, sm=sm)
        self.clients.append(c)
        return c

    async def abort_all(self):
        for c in self.clients:
            try:
                c.abort()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass

    # -- the checks (each returns a detail string or raises) --------------------------------

    async def login(self):
        args = self.args
        self.a = self.client(f"{args.jid_a}/flows-1")
        self.b = self.client(args.jid_b)
        self.sm = self.client(args.jid_sm, sm=True)
        self.mam = self.client(args.jid_mam)
        await asyncio.gather(*(c.login(15) for c in (self.a, self.b, self.sm, self.mam)))
        for c in (self.b, self.sm, self.mam):
            await c.get_roster(timeout=10)
            c.send_presence()
        await asyncio.gather(*(roundtrip(c) for c in (self.b, self.sm, self.mam)))
        return ", ".join(c.boundjid.full for c in (self.a, self.b, self.sm, self.mam))

    async def roster_get(self):
        a = self.a
        if "rosterver" not in a.features:
            raise RuntimeError("the server does not advertise roster versioning (XEP-0237)")
        r = await raw_roster_get(a, ver="")
        if r.xml.find("{jabber:iq:roster}query") is None:
            raise RuntimeError("empty result to a get with ver='' (expected the whole roster)")
        ver = r["roster"]["ver"]
        if ver is None:
            raise RuntimeError(f"roster result without ver: {r}")
        self.roster_ver = ver
        a.send_presence()
        await roundtrip(a)
        return f"{len(r['roster']['items'])} items, ver={ver!r}"

    async def roster_add(self):
        a = self.a
        contact = f"zed-{self.nonce}@{self.args.domain}"
        self.roster_contact = contact
        mark = a.pushes.mark()
        await a.update_roster(contact, name="Zed Interop", groups=["Interop Friends"], timeout=10)
        push = await a.pushes.wait(push_for(contact), 5, mark, f"roster push for {contact}")
        item = push["roster"]["items"][contact]
        if item["name"] != "Zed Interop" or item["groups"] != ["Interop Friends"]:
            raise RuntimeError(f"push carries name={item['name']!r} groups={item['groups']!r}")
        if not push["roster"]["ver"]:
            raise RuntimeError("roster push without ver (XEP-0237)")
        # A versioned get from the version before the add returns the new item (or all items).
        r = await raw_roster_get(a, ver=self.roster_ver)
        got = {str(j): v for j, v in r["roster"]["items"].items()}
        if contact not in got and not a.pushes.since(mark, push_for(contact)):
            raise RuntimeError(f"versioned roster get from {self.roster_ver!r} lacks the item")
        if contact in got and got[contact]["groups"] != ["Interop Friends"]:
            raise RuntimeError(f"roster get returns groups {got[contact]['groups']!r}")
        self.roster_ver = push["roster"]["ver"]
        return f"push ver={push['roster']['ver']!r}, subscription={item['subscription']!r}"

    async def roster_remove(self):
        a = self.a
        contact = self.roster_contact
        mark = a.pushes.mark()
        await a.del_roster_item(contact)
        push = await a.pushes.wait(push_for(contact, lambda i: i["subscription"] == "remove"),
                                   5, mark, f"roster push removing {contact}")
        r = await raw_roster_get(a, ver="")
        if contact in {str(j) for j in r["roster"]["items"]}:
            raise RuntimeError("item still in the roster after removal")
        self.roster_ver = r["roster"]["ver"]
        return f"push ver={push['roster']['ver']!r}"

    async def roster_version_current(self):
        r = await raw_roster_get(self.a, ver=self.roster_ver)
        # Look before touching r["roster"]: slixmpp would create the element.
        if r.xml.find("{jabber:iq:roster}query") is None:
            return "empty IQ result (changes come as pushes)"
        items = r["roster"]["items"]
        if items:
            raise RuntimeError(f"get with the current ver {self.roster_ver!r} returned {len(items)} items")
        return f"empty query, ver={r['roster']['ver']!r}"

    async def subscription(self):
        a, b = self.a, self.b
        ja, jb = a.boundjid.bare, b.boundjid.bare
        self.pres_mark = (a.presences.mark(), b.presences.mark())
        a_push, b_push = a.pushes.mark(), b.pushes.mark()
        # A asks, B approves and asks back, A approves.
        a.send_presence_subscription(pto=jb)
        await b.presences.wait(lambda p: p["type"] == "subscribe" and p["from"].bare == ja, 5,
                               what=f"subscribe from {ja}")
        b.send_presence_subscription(pto=ja, ptype="subscribed")
        b.send_presence_subscription(pto=ja)
        await a.presences.wait(lambda p: p["type"] == "subscribed" and p["from"].bare == jb, 5,
                               what=f"subscribed from {jb}")
        await a.presences.wait(lambda p: p["type"] == "subscribe" and p["from"].bare == jb, 5,
                               what=f"subscribe from {jb}")
        a.send_presence_subscription(pto=jb, ptype="subscribed")
        both = lambda i: i["subscription"] == "both"  # noqa: E731
        await a.pushes.wait(push_for(jb, both), 5, a_push, f"roster push with {jb} at both")
        await b.pushes.wait(push_for(ja, both), 5, b_push, f"roster push with {ja} at both")
        # What the server stores, not what the pushes said.
        ra, rb = await asyncio.gather(raw_roster_get(a), raw_roster_get(b))
        sa = ra["roster"]["items"].get(jb, {}).get("subscription")
        sb = rb["roster"]["items"].get(ja, {}).get("subscription")
        if (sa, sb) != ("both", "both"):
            raise RuntimeError(f"rosters say A->B {sa!r}, B->A {sb!r}")
        return "A's item for B: both, B's item for A: both"

    async def presence_after_subscription(self):
        a, b = self.a, self.b
        ma, mb = self.pres_mark
        avail = lambda who: lambda p: p["type"] in ("available", *p.showtypes) and p["from"] == who  # noqa: E731
        missing = []
        try:
            await a.presences.wait(avail(b.boundjid), 3, ma)
        except Missing:
            missing.append(f"A got no available presence from {b.boundjid}")
        try:
            await b.presences.wait(avail(a.boundjid), 3, mb)
        except Missing:
            missing.append(f"B got no available presence from {a.boundjid}")
        if missing:
            raise RuntimeError("; ".join(missing) + " after the handshake (RFC 6121 §3.1.5)")
        return "each side has the other's available presence"

    async def presence_update(self):
        a, b = self.a, self.b
        status = f"interop status {self.nonce}"
        mark = a.presences.mark()
        b.send_presence(pshow="away", pstatus=status)
        p = await a.presences.wait(lambda p: p["from"] == b.boundjid and p["status"] == status,
                                   5, mark, f"presence with status {status!r} from {b.boundjid}")
        b.send_presence()
        await a.presences.wait(lambda p: p["from"] == b.boundjid and not p["status"], 5, mark,
                               f"presence without status from {b.boundjid}")
        return f"show={p['show']!r}"

    async def disco_server(self):
        info = await self.a["xep_0030"].get_info(jid=self.args.domain, local=False, cached=False)
        features = set(info["disco_info"]["features"])
        missing = [f for f in SERVER_FEATURES if f not in features]
        if missing:
            raise RuntimeError(f"missing {missing}; listed: {sorted(features)}")
        return f"{len(features)} features incl. {', '.join(SERVER_FEATURES[2:])}"

    async def disco_account(self):
        a = self.a
        info = await a["xep_0030"].get_info(jid=a.boundjid.bare, local=False, cached=False)
        features = set(info["disco_info"]["features"])
        self.pep_features = features
        if NS_MAM not in features:
            raise RuntimeError(f"{NS_MAM} missing; listed: {sorted(features)}")
        return f"{len(features)} features incl. {NS_MAM}"

    async def vcard(self):
        a, b = self.a, self.b
        v = a["xep_0054"].make_vcard()
        v["FN"] = "Carol Interop"
        v["NICKNAME"] = f"carol-{self.nonce}"
        await a["xep_0054"].publish_vcard(v, timeout=10)
        r = await b["xep_0054"].get_vcard(a.boundjid.bare, cached=False, timeout=10)
        got = r["vcard_temp"]
        nick = got["NICKNAME"]
        nick = nick[0] if isinstance(nick, list) and len(nick) == 1 else nick
        if (got["FN"], nick) != ("Carol Interop", f"carol-{self.nonce}"):
            raise RuntimeError(f"B got FN={got['FN']!r} NICKNAME={got['NICKNAME']!r}")
        return f"FN={got['FN']!r}, NICKNAME={nick!r}"

    async def pep(self):
        a, b = self.a, self.b
        if self.pep_features is None:
            info = await a["xep_0030"].get_info(jid=a.boundjid.bare, local=False, cached=False)
            self.pep_features = set(info["disco_info"]["features"])
        if NS_PUBSUB_PUBLISH not in self.pep_features:
            raise Skip(f"the account does not advertise {NS_PUBSUB_PUBLISH} (PEP not in place)")
        # B advertises tune+notify in its caps (the xep_0118 plugin registered the interest);
        # make sure the current caps are computed, then announce them with a fresh presence.
        own = await b["xep_0030"].get_info(jid=b.boundjid, local=True)
        features = (own["disco_info"] if isinstance(own, slixmpp.Iq) else own)["features"]
        if f"{NS_TUNE}+notify" not in features:
            raise RuntimeError(f"B's own disco lacks {NS_TUNE}+notify: {sorted(features)}")
        await b["xep_0115"].update_caps(broadcast=False)
        ver = await b["xep_0115"].get_verstring(b.boundjid)
        mark, qmark = a.presences.mark(), b.caps_queries.mark()
        b.send_presence()
        p = await a.presences.wait(lambda p: p["from"] == b.boundjid, 5, mark,
                                   f"presence from {b.boundjid}")
        if p["caps"]["ver"] != ver:
            raise RuntimeError(f"B's presence reached A with caps ver {p['caps']['ver']!r}, expected {ver!r}")
        # The server may query B's caps now (or know the ver already): give it a moment.
        try:
            await b.caps_queries.wait(lambda iq: ver in iq["disco_info"]["node"], 1.5, qmark)
            queried = "server queried B's caps"
        except Missing:
            queried = "caps ver already known"
        await asyncio.sleep(0.3)
        title = f"interop tune {self.nonce}"
        mark = b.events.mark()
        await a["xep_0118"].publish_tune(artist="Oxpecker", title=title, timeout=10)
        name, msg = await b.events.wait(
            lambda e: e[0] == "user_tune_publish"
            and e[1]["pubsub_event"]["items"]["item"]["tune"]["title"] == title,
            5, mark, f"PEP notification of the tune {title!r}")
        if msg["from"] != a.boundjid.bare:
            raise RuntimeError(f"notification from {msg['from']}, expected {a.boundjid.bare}")
        return f"tune notification from {msg['from']} ({queried})"

    async def blocking(self):
        a, b = self.a, self.b
        ja, jb = a.boundjid.bare, b.boundjid.bare
        blocked_body = f"B while blocked {self.nonce}"
        after_body = f"B after unblock {self.nonce}"
        out_blocked = f"A while blocking {self.nonce}"
        out_after = f"A after unblock {self.nonce}"
        mark = a.messages.mark()
        bmark = b.messages.mark()
        await a["xep_0191"].block(jb, timeout=10)
        try:
            blocklist = await a["xep_0191"].get_blocked(timeout=10)
            if jb not in {str(j) for j in blocklist["blocklist"]["items"]}:
                raise RuntimeError(f"blocklist is {blocklist['blocklist']['items']!r} after blocking")
            b.send_message(mto=ja, mbody=blocked_body, mtype="chat")
            a.send_message(mto=jb, mbody=out_blocked, mtype="chat")
            # Both messages have been routed (or dropped) once the pings come back.
            await asyncio.gather(roundtrip(a), roundtrip(b))
            await asyncio.sleep(0.5)
        finally:
            await a["xep_0191"].unblock(jb, timeout=10)
        b.send_message(mto=ja, mbody=after_body, mtype="chat")
        a.send_message(mto=jb, mbody=out_after, mtype="chat")
        await a.messages.wait(body_is(after_body), 5, mark, f"message {after_body!r}")
        await b.messages.wait(body_is(out_after), 5, bmark, f"message {out_after!r}")
        # Messages from one sender arrive in order: a blocked one would be here by now.
        if a.messages.since(mark, body_is(blocked_body)):
            raise RuntimeError("B's message sent while A blocked B was delivered to A")
        if b.messages.since(bmark, body_is(out_blocked)):
            raise RuntimeError("A's message to B sent while A blocked B was delivered")
        errors = lambda box, m0: [m["error"]["condition"] for m in box.since(m0, lambda m: m["type"] == "error")]  # noqa: E731
        return (f"both directions dropped (errors to B: {errors(b.messages, bmark) or 'none'}, "
                f"to A: {errors(a.messages, mark) or 'none'}); delivered after unblock")

    async def offline(self):
        a = self.a
        args = self.args
        body = f"offline message {self.nonce}"
        old = self.b
        await old.close()
        # A sees B go away, so the server has ended B's session.
        await a.presences.wait(lambda p: p["type"] == "unavailable" and p["from"] == old.boundjid,
                               5, 0, f"unavailable presence from {old.boundjid}")
        a.send_message(mto=old.boundjid.bare, mbody=body, mtype="chat")
        await roundtrip(a)
        sent_at = time.time()
        self.b = b = self.client(args.jid_b)
        await b.login(10)
        await b.get_roster(timeout=10)
        b.send_presence()  # offline messages are flushed on the initial presence
        msg = await b.messages.wait(body_is(body), 5, what=f"offline message {body!r}")
        if msg["from"].bare != a.boundjid.bare:
            raise RuntimeError(f"from {msg['from']}, expected {a.boundjid.bare}")
        stamp = msg["delay"]["stamp"] if msg.xml.find("{urn:xmpp:delay}delay") is not None else None
        if stamp is None:
            raise RuntimeError(f"no XEP-0203 <delay/>: {msg}")
        if abs(stamp.timestamp() - sent_at) > 30:
            raise RuntimeError(f"delay stamp {stamp.isoformat()} is far from the send time")
        again = b.messages.since(0, body_is(body))
        if len(again) != 1:
            raise RuntimeError(f"delivered {len(again)} times")
        return f"delay stamp {stamp.isoformat()} from {msg['delay']['from'] or '-'}"

    async def carbons(self):
        a1, b = self.a, self.b
        a2 = self.client(f"{self.args.jid_a}/flows-2")
        await a2.login(10)
        try:
            await asyncio.gather(a1["xep_0280"].enable(timeout=10), a2["xep_0280"].enable(timeout=10))
            a2.send_presence()
            await roundtrip(a2)
            to_a1 = f"to resource 1 {self.nonce}"
            from_a1 = f"from resource 1 {self.nonce}"
            mark = a2.messages.mark()
            b.send_message(mto=a1.boundjid, mbody=to_a1, mtype="chat")
            await a1.messages.wait(body_is(to_a1), 5, what=f"message {to_a1!r}")
            got = await a2.messages.wait(carbon("received", to_a1), 5, mark,
                                         f"received carbon of {to_a1!r}")
            inner = got["carbon_received"]
            if got["from"] != a1.boundjid.bare or inner["from"] != b.boundjid:
                raise RuntimeError(f"received carbon from {got['from']} of a message from {inner['from']}")
            # And the other direction: what resource 1 sends is copied to resource 2.
            a1.send_message(mto=b.boundjid, mbody=from_a1, mtype="chat")
            await b.messages.wait(body_is(from_a1), 5, what=f"message {from_a1!r}")
            sent = await a2.messages.wait(carbon("sent", from_a1), 5, mark,
                                          f"sent carbon of {from_a1!r}")
            if sent["from"] != a1.boundjid.bare or sent["carbon_sent"]["to"] != b.boundjid:
                raise RuntimeError(f"sent carbon from {sent['from']} of a message to {sent['carbon_sent']['to']}")
            plain = a2.messages.since(mark, lambda m: m["body"] in (to_a1, from_a1))
            if plain:
                raise RuntimeError("resource 2 also got an uncarboned copy")
            return "received and sent carbons at resource 2"
        finally:
            await a2.close()

    async def stream_management(self):
        a, sm = self.a, self.sm
        name, enabled = await sm.events.wait(lambda e: e[0] in ("sm_enabled", "sm_failed"), 5,
                                             what="<enabled/> or <failed/> (XEP-0198 not offered?)")
        if name != "sm_enabled":
            raise RuntimeError("the server refused to enable stream management")
        if not sm["xep_0198"].sm_id or enabled["resume"] not in ("true", "1", True):
            raise RuntimeError(f"enabled without resumption: {enabled}")
        before = f"before the drop {self.nonce}"
        away = f"while away {self.nonce}"
        a.send_message(mto=sm.boundjid, mbody=before, mtype="chat")
        await sm.messages.wait(body_is(before), 5, what=f"message {before!r}")
        await asyncio.sleep(0.3)  # let the client's ack of it reach the server
        full = sm.boundjid.full
        # Drop the TCP connection without </stream:stream> or a TLS close_notify (RST).
        emark = sm.events.mark()
        raw = sm.transport.get_extra_info("socket")
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sm.transport.abort()
        await sm.events.wait(lambda e: e[0] == "disconnected", 5, emark, "disconnected event")
        await asyncio.sleep(0.5)  # the server notices the lost connection
        mark = sm.messages.mark()
        a.send_message(mto=full, mbody=away, mtype="chat")
        await roundtrip(a)
        how = await sm.login(10)
        if how != "session_resumed":
            failed = sm.events.since(emark, lambda e: e[0] == "sm_failed")
            raise RuntimeError(f"not resumed but {how}" + (f" after <failed/>: {failed[0][1]}" if failed else ""))
        if sm.boundjid.full != full:
            raise RuntimeError(f"resumed as {sm.boundjid.full}, expected {full}")
        await sm.messages.wait(body_is(away), 5, mark, f"message sent while away {away!r}")
        await asyncio.sleep(1.0)  # any duplicate would arrive within this
        n_away = len(sm.messages.since(mark, body_is(away)))
        n_before = len(sm.messages.since(mark, body_is(before)))
        if n_away != 1 or n_before != 0:
            raise RuntimeError(f"after resume: {n_away} x the message sent while away, {n_before} x the one acked before")
        return f"resumed {full}; the message sent while away arrived once"

    async def mam_paging(self):
        a, peer = self.a, self.mam
        bodies = [f"mam {i:02d} {self.nonce}" for i in range(MAM_MESSAGES)]
        for i, body in enumerate(bodies):
            src, dst = (a, peer) if i % 2 == 0 else (peer, a)
            src.send_message(mto=dst.boundjid, mbody=body, mtype="chat")
            await dst.messages.wait(body_is(body), 5, what=f"message {body!r}")
        pages = []
        got = []
        async for page in a["xep_0313"].retrieve(with_jid=peer.boundjid.bare, iterator=True,
                                                 rsm={"max": MAM_PAGE}):
            results = page["mam"]["results"]
            pages.append(len(results))
            got.extend(r["mam_result"]["forwarded"]["stanza"]["body"] for r in results)
            if len(pages) > MAM_MESSAGES:
                break
        if not pages:
            # slixmpp's iterator ends silently on an error reply: ask once more to show it.
            await a["xep_0313"].retrieve(with_jid=peer.boundjid.bare, rsm={"max": MAM_PAGE}, timeout=10)
            raise RuntimeError("the paged archive query returned no page")
        if got != bodies:
            raise RuntimeError(f"got {len(got)} messages in pages {pages}; first mismatch at "
                               f"{next((i for i, (x, y) in enumerate(zip(got, bodies)) if x != y), min(len(got), len(bodies)))}")
        if max(pages) > MAM_PAGE:
            raise RuntimeError(f"a page held more than {MAM_PAGE}: {pages}")
        return f"{len(got)} messages in order, pages {pages}"

    async def disconnect(self):
        for c in list(self.clients):
            if c.transport:
                await c.close()
        self.clients = []
        return ""


CHECKS = [
    ("log in A, B, SM and MAM clients (slixmpp with disco, caps, PEP, vCard, blocking, carbons, MAM, SM plugins)", "login", 30),
    ("roster get with versioning (XEP-0237)", "roster_get", 10),
    ("roster add with name and group; roster push received", "roster_add", 10),
    ("roster remove; roster push received", "roster_remove", 10),
    ("roster get with the current version returns no items (XEP-0237)", "roster_version_current", 10),
    ("subscription handshake A<->B ends at both on both sides", "subscription", 15),
    ("each side receives the contact's available presence after the handshake", "presence_after_subscription", 10),
    ("B's presence update is broadcast to A", "presence_update", 10),
    ("disco#info of the server lists the IM features (XEP-0030)", "disco_server", 10),
    ("disco#info of the own bare JID lists urn:xmpp:mam:2", "disco_account", 10),
    ("vCard set by A, retrieved by B (XEP-0054)", "vcard", 10),
    ("PEP publish reaches the contact that advertises +notify in its caps (XEP-0163/0115)", "pep", 15),
    ("blocking: blocked contact's message not delivered, unblock restores delivery (XEP-0191)", "blocking", 15),
    ("offline: message to a disconnected B delivered on reconnect with a XEP-0203 delay", "offline", 20),
    ("carbons: message to A's resource 1 copied to resource 2 (XEP-0280)", "carbons", 15),
    ("stream management: abrupt TCP drop, resume, message sent while away arrives once (XEP-0198)", "stream_management", 20),
    (f"MAM: {MAM_MESSAGES} exchanged messages read back in order with RSM pages of {MAM_PAGE} (XEP-0313/0059)", "mam_paging", 25),
    ("all flow clients disconnect cleanly", "disconnect", 15),
]


async def run(args):
    flows = Flows(args)
    deadline = time.monotonic() + args.timeout
    results = []

    def report(status, name, detail):
        results.append(status)
        print(f"{status}: {name}{f' ({detail})' if detail else ''}", flush=True)

    try:
        for i, (name, method, limit) in enumerate(CHECKS):
            left = deadline - time.monotonic()
            if left <= 0:
                report("FAIL", name, f"not run: overall limit of {args.timeout:.0f} s reached")
                continue
            if i > 0 and results[0] != "PASS" and method != "disconnect":
                report("FAIL", name, "not run: the clients could not log in")
                continue
            try:
                detail = await asyncio.wait_for(getattr(flows, method)(), min(limit, left))
                report("PASS", name, detail)
            except Skip as e:
                report("SKIP", name, str(e))
            except Missing as e:
                report("FAIL", name, str(e))
            except IqTimeout as e:
                report("FAIL", name, f"no reply within 10 s to {e.iq}")
            except asyncio.TimeoutError:
                report("FAIL", name, f"timed out after {min(limit, left):.0f} s")
            except IqError as e:
                cond, text = e.iq["error"]["condition"], e.iq["error"]["text"]
                report("FAIL", name, f"error reply: {cond}" + (f" ({text})" if text else ""))
            except (Exception, ssl.SSLError) as e:  # noqa: BLE001 - every failure is a FAIL line
                report("FAIL", name, f"{type(e).__name__}: {e}")
    finally:
        await flows.abort_all()
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--ca", required=True, help="PEM file to trust (the server's certificate)")
    p.add_argument("--jid-a", required=True, help="account with two resources (and B's contact)")
    p.add_argument("--jid-b", required=True, help="A's contact")
    p.add_argument("--jid-sm", required=True, help="account for the stream-management check")
    p.add_argument("--jid-mam", required=True, help="A's partner in the MAM check")
    p.add_argument("--password", required=True, help="password of all four accounts")
    p.add_argument("--timeout", type=float, default=90.0, help="overall time limit in seconds")
    p.add_argument("--debug", action="store_true", help="slixmpp debug logging")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.CRITICAL)
    t0 = time.monotonic()
    results = asyncio.run(run(args))
    print(f"note: the flows took {time.monotonic() - t0:.1f} s", flush=True)
    return 0 if results and "FAIL" not in results else 1


if __name__ == "__main__":
    sys.exit(main())
