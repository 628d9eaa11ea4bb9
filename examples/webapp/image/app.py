"""The webapp's front end on port 80: GET / lists the messages it reads from the db at DB_ADDRESS:DB_PORT (an
address of the VPN), POST / stores the request's body there."""

import http.server
import json
import socket
import sys
import urllib.request

DB = f"http://{sys.argv[1]}:{sys.argv[2]}/messages"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        with urllib.request.urlopen(DB, timeout=5) as reply:
            messages = json.load(reply)
        lines = [f"front end {socket.gethostname()}, db at {DB}: {len(messages)} message(s)"]
        lines += [f"- {text}" for text in messages]
        self.answer(200, "\n".join(lines) + "\n")

    def do_POST(self) -> None:
        text = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with urllib.request.urlopen(urllib.request.Request(DB, data=text, method="POST"), timeout=5) as reply:
            self.answer(reply.status, reply.read().decode())

    def answer(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", 80), Handler).serve_forever()
