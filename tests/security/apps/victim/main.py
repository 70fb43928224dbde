"""Another tenant's app: answers GET / with its pid (its secret STRIPE_KEY stays in its environment)."""

import json
import os
import socket
import struct
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


def reach_database() -> dict[str, object]:
    """Open a connection to this app's database as a client library would (PostgreSQL's SSLRequest first): what
    answered, or the error. An attacker listening on the database's port would get this connection."""
    url = urlsplit(os.environ["DBOS_DATABASE_URL"])
    try:
        with socket.create_connection((url.hostname, url.port), timeout=5) as s:
            s.sendall(struct.pack("!ii", 8, 80877103))
            return {"answer": s.recv(1).decode(errors="replace")}
    except OSError as exc:
        return {"error": str(exc)}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = reach_database() if self.path == "/db" else {}
        data = json.dumps({"app": os.environ.get("DBOS_APP_NAME"), "pid": os.getpid(), **body}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
