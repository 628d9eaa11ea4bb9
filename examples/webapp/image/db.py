"""The webapp's "db": a message store over HTTP on PORT. GET /messages → a JSON list; POST /messages adds the
body (a UTF-8 text) and answers 201."""

import http.server
import json
import sys
import threading

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 4001
messages: list[str] = []
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        with lock:
            body = json.dumps(messages).encode()
        self.answer(200, body, "application/json")

    def do_POST(self) -> None:
        text = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        with lock:
            messages.append(text)
        self.answer(201, b"stored\n", "text/plain")

    def answer(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
