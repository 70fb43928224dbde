"""A hostile tenant's app: POST /run executes the request body as Python (stdout and the exception come back)."""

import contextlib
import io
import json
import os
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self._answer(200, {"app": os.environ.get("DBOS_APP_NAME"), "uid": os.getuid(), "pid": os.getpid()})

    def do_POST(self) -> None:  # noqa: N802
        code = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
        out = io.StringIO()
        error = None
        with contextlib.redirect_stdout(out):
            try:
                exec(compile(code, "<attack>", "exec"), {"__name__": "attack"})  # noqa: S102 - the point
            except BaseException:  # noqa: BLE001
                error = traceback.format_exc(limit=3)
        self._answer(200, {"stdout": out.getvalue(), "error": error})

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
