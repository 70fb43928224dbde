"""GET / answers 200 until GET /break, then 500 (BROKEN=1 in its environment: 500 from the start)."""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

broken = os.environ.get("BROKEN") == "1"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        global broken
        if self.path == "/break":
            broken = True
        status = 500 if broken else 200
        self.send_response(status)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok" if status == 200 else b"no")

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
