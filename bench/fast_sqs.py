"""A stand-in for SQS that accepts every SendMessageBatch at once and keeps nothing.

    python bench/fast_sqs.py PORT

moto's server answers a batch in milliseconds to tens of milliseconds and
falls behind past a few hundred messages a second (`not_stored` in the
benchmark), while messages waiting for it fill the web process's heap
(hundreds in flight, each a task, a timeout and its frames, scanned by every
garbage collection). Real SQS answers in ~10 ms at any rate. With
`bench/fanout.py --fast-sqs` the server's queue calls go here instead, so
the figures show the server; nothing is stored, so nothing is persisted.
"""

import hashlib
import json
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: botocore reuses its connections

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        target = self.headers.get("X-Amz-Target", "")
        if target.endswith(".SendMessageBatch"):
            reply = {
                "Successful": [
                    {
                        "Id": entry["Id"],
                        "MessageId": str(uuid.uuid4()),
                        "MD5OfMessageBody": hashlib.md5(  # noqa: S324 - SQS's checksum
                            entry["MessageBody"].encode()
                        ).hexdigest(),
                    }
                    for entry in body["Entries"]
                ],
                "Failed": [],
            }
            self._answer(200, reply)
        else:
            self._answer(400, {"__type": "UnsupportedOperation", "message": target})

    def _answer(self, status: int, reply: dict) -> None:
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
