"""Answers GET / with what this VM is, as JSON: its environment file, host name and user."""

import json
import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(
            {
                "ip": os.environ.get("MY_IP", ""),
                "node": os.environ.get("MY_NODE", ""),
                "peers": sorted(p for p in os.environ.get("PEERS", "").split(",") if p),
                "hostname": socket.gethostname(),
                "uid": os.getuid(),
                "root": sorted(os.listdir("/")),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


HTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
