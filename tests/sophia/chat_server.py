"""A chat-completions server on 127.0.0.1 (a free port) for the SOPHIA tests: every POST is
answered by `respond(body) -> reply`, one of
    ('content', text)            a 200 chat-completions response whose message content is `text`
    ('status', code)             that HTTP status with a short error body
    ('sleep', seconds, text)     the 'content' reply after `seconds` (a client timeout)
and recorded in `requests` (the parsed bodies, in arrival order)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ScriptedChat:
    def __init__(self, respond):
        self.respond, self.requests, self.lock = respond, [], threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                del args

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    key = self.headers.get("Authorization")
                    server.requests.append({"path": self.path, "body": body, "key": key})
                reply = server.respond(body)
                try:
                    if reply[0] == "status":
                        self.send_error(reply[1], "scripted failure")
                        return
                    if reply[0] == "sleep":
                        time.sleep(reply[1])
                        reply = ("content", reply[2])
                    message = {"role": "assistant", "content": reply[1]}
                    data = json.dumps({"choices": [{"index": 0, "message": message}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # The client gave up (its timeout).

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def names(self) -> list[str]:
        """The schema name of every request, in arrival order."""
        return [r["body"]["response_format"]["json_schema"]["name"] for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
