"""Crash suite driver (run by scripts/crash-test): rounds of kill -9 at a random moment under
concurrent REST account and roster writes and XEP-0198-acknowledged messages to an offline
account; after each restart every acknowledged write must be there. Standard library only."""

import argparse
import base64
import json
import os
import random
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

SM = "urn:xmpp:sm:3"


def header(to="localhost"):
    return ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>" % to)


class Xmpp:
    """A raw client: STARTTLS (verifying the server's certificate), PLAIN, bind."""

    def __init__(self, port, ca, user, password, resource):
        self.buf = ""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.send(header())
        self.until("</stream:features>")
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.until("<proceed")
        self.until("/>")
        self.buf = ""
        ctx = ssl.create_default_context(cafile=ca)
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.send(header())
        self.until("</stream:features>")
        node = user.split("@")[0]
        creds = base64.b64encode(("\0%s\0%s" % (node, password)).encode()).decode()
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>" % creds)
        got = self.until_any(["<success", "</failure>"])
        if "<success" not in got:
            raise RuntimeError("login failed for %s: %s" % (user, got))
        self.send(header())
        self.until("</stream:features>")
        self.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  "<resource>%s</resource></bind></iq>" % resource)
        self.until("</iq>")

    def send(self, s):
        self.sock.sendall(s.encode())

    def read(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("closed; have %r" % self.buf[-300:])
        self.buf += data.decode("utf-8", "replace")

    def until(self, marker):
        return self.until_any([marker])

    def until_any(self, markers):
        while True:
            hits = [(self.buf.find(m), m) for m in markers if m in self.buf]
            if hits:
                pos, m = min(hits)
                out, self.buf = self.buf[:pos + len(m)], self.buf[pos + len(m):]
                return out
            self.read()


def sm_sender(args, round_no, stop, acked):
    """Sends messages to the offline account, each followed by <r/>; records what <a h/> covers."""
    try:
        c = Xmpp(args.c2s, args.ca, "sender@localhost", args.password, "r%d" % round_no)
        c.send("<enable xmlns='%s'/>" % SM)
        c.until("<enabled")
        c.until(">")
        n = 0
        while not stop.is_set():
            n += 1
            c.send("<message to='offline@localhost' type='chat' id='r%d-%d'><body>r%d-%d</body>"
                   "</message><r xmlns='%s'/>" % (round_no, n, round_no, n, SM))
            while True:
                m = re.search(r"<a [^>]*h=['\"](\d+)['\"]", c.buf)
                if m:
                    h = int(m.group(1))
                    c.buf = c.buf[m.end():]
                    for i in range(len(acked) + 1, h + 1):
                        acked.append("r%d-%d" % (round_no, i))
                    break
                if re.search(r"<r xmlns=['\"]%s['\"]\s*/>" % SM, c.buf):
                    c.buf = re.sub(r"<r xmlns=['\"]%s['\"]\s*/>" % SM, "", c.buf, count=1)
                    c.send("<a xmlns='%s' h='0'/>" % SM)
                c.read()
    except (OSError, EOFError, RuntimeError, ssl.SSLError) as e:
        note("sender", e)  # the server was killed


def note(who, what):
    """Says why a writer stopped (expected: the kill) when CRASH_DEBUG is set."""
    if os.environ.get("CRASH_DEBUG"):
        print("note: %s: %s" % (who, what), file=sys.stderr, flush=True)


def rest(args, method, path, body=None):
    req = urllib.request.Request("http://127.0.0.1:%d/admin_rest%s" % (args.http, path), method=method)
    token = base64.b64encode(("admin@localhost:%s" % args.password).encode()).decode()
    req.add_header("Authorization", "Basic " + token)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, data=data, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def rest_writer(args, round_no, worker, stop, users, contacts):
    """Creates accounts and adds each as a contact of `owner`; records what was acknowledged."""
    i = 0
    try:
        while not stop.is_set():
            i += 1
            name = "r%dw%du%d" % (round_no, worker, i)
            status, text = rest(args, "POST", "/user/" + name, {"password": "pw"})
            if status not in (200, 201):
                note("rest", "%s %s" % (status, text[:200]))
            if status in (200, 201):
                users.append(name)
                status, _ = rest(args, "POST", "/roster/owner", {"contact": name + "@localhost"})
                if status in (200, 201):
                    contacts.append(name)
    except OSError as e:
        note("rest", e)  # the server was killed


def start(args):
    log = open(args.log, "a")
    p = subprocess.Popen([args.bin, "--config", args.config, "serve"], stdout=log, stderr=log)
    deadline = time.time() + 30
    while time.time() < deadline:
        if p.poll() is not None:
            raise RuntimeError("server exited with %s (see %s)" % (p.returncode, args.log))
        try:
            if rest(args, "GET", "/ping")[0] == 200:
                socket.create_connection(("127.0.0.1", args.c2s), timeout=1).close()
                return p
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server not ready within 30 s")


def verify(args, users, contacts, acked):
    """Every acknowledged account, roster item and message is there; returns what is missing."""
    missing = [u for u in users if rest(args, "GET", "/user/" + u)[0] != 200]
    status, roster = rest(args, "GET", "/roster/owner")
    missing += ["roster:" + c for c in contacts if status != 200 or (c + "@localhost") not in roster]
    want = set(acked)
    got = set()
    if want:
        c = Xmpp(args.c2s, args.ca, "offline@localhost", args.password, "verify")
        c.send("<presence/>")
        deadline = time.time() + 30
        c.sock.settimeout(2)
        while want - got and time.time() < deadline:
            got.update(re.findall(r"<body>(r\d+-\d+)</body>", c.buf))
            c.buf = c.buf[-200:]
            try:
                c.read()
            except socket.timeout:
                pass
        got.update(re.findall(r"<body>(r\d+-\d+)</body>", c.buf))
        c.sock.close()
    missing += ["message:" + m for m in sorted(want - got)]
    return missing


def main():
    ap = argparse.ArgumentParser()
    for a in ("bin", "config", "ca", "password", "log"):
        ap.add_argument("--" + a, required=True)
    ap.add_argument("--c2s", type=int, required=True)
    ap.add_argument("--http", type=int, required=True)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    failures = 0
    server = start(args)
    try:
        failures = rounds(args, server)
    finally:
        server_now[0].kill()
        server_now[0].wait()
    print("%d passed, %d failed" % (args.rounds - failures, failures))
    sys.exit(1 if failures else 0)


server_now = [None]


def rounds(args, server):
    """Runs the rounds; returns how many lost an acknowledged write."""
    failures = 0
    totals = [0, 0, 0]
    server_now[0] = server
    for r in range(1, args.rounds + 1):
        stop = threading.Event()
        users, contacts, acked = [], [], []
        threads = [threading.Thread(target=rest_writer, args=(args, r, w, stop, users, contacts))
                   for w in range(3)]
        threads.append(threading.Thread(target=sm_sender, args=(args, r, stop, acked)))
        for t in threads:
            t.start()
        time.sleep(random.uniform(2.0, 4.0))
        server.kill()  # SIGKILL at a random moment
        server.wait()
        stop.set()
        for t in threads:
            t.join(15)
        server = start(args)
        server_now[0] = server
        missing = verify(args, list(users), list(contacts), list(acked))
        ok = not missing
        failures += 0 if ok else 1
        for i, n in enumerate((len(users), len(contacts), len(acked))):
            totals[i] += n
        print("%s: round %d: kill -9, restart; acknowledged %d accounts, %d roster items, %d messages; %s"
              % ("PASS" if ok else "FAIL", r, len(users), len(contacts), len(acked),
                 "all there" if ok else "missing %s" % missing[:10]), flush=True)
    print("acknowledged in all: %d accounts, %d roster items, %d messages" % tuple(totals))
    if 0 in totals:
        print("FAIL: some kind of write was never acknowledged, so nothing was proven for it")
        failures += 1
    return failures


if __name__ == "__main__":
    main()
