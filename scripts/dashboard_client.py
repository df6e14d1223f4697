"""A slixmpp client for scripts/dashboard-test: logs in over STARTTLS (verifying the server's
certificate), prints "online" once its session is bound and sends presence, then stays
connected until the server closes the session, prints "closed" and exits 0.

    python dashboard_client.py PORT CA_FILE JID PASSWORD RESOURCE
"""
import asyncio
import sys
from pathlib import Path

import slixmpp


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca_file):
        super().__init__(jid, password)
        self.ca_certs = Path(ca_file)
        self.closed = asyncio.Event()
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("disconnected", lambda _e: self.closed.set())
        self.add_event_handler("failed_auth", lambda _e: self.closed.set())

    async def start(self, _event):
        self.send_presence()
        await self.get_roster()
        print("online", flush=True)


async def main():
    port, ca_file, jid, password, resource = sys.argv[1:6]
    c = Client(f"{jid}/{resource}", password, ca_file)
    c.connect(address=("127.0.0.1", int(port)), force_starttls=True)
    await asyncio.wait_for(c.closed.wait(), 120)
    print("closed", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
