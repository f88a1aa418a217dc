"""A small OpenAI-compatible chat-completions server on 127.0.0.1 for tests.

It checks each request as the real API would receive it (JSON body, bearer key, model,
messages with ``image_url`` data URLs of decodable images) and answers through a function of
(prompt text, decoded images) given by the test. ``fail_first`` makes the first request of
each distinct body fail with HTTP 500 once (to exercise retries).
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

Answer = Callable[[str, list[Image.Image]], str]


@contextmanager
def chat_server(answer: Answer, key: str = "test-key", fail_first: bool = False) -> Iterator[Any]:
    seen: set[str] = set()
    log: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/v1/chat/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            if self.headers.get("Authorization") != f"Bearer {key}":
                return self._send(401, {"error": {"message": "bad key"}})
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            body = json.loads(raw)
            with lock:
                log.append(body)
                first = raw not in seen
                seen.add(raw)
            if fail_first and first:
                return self._send(500, {"error": {"message": "try again"}})
            text, images = "", []
            for message in body["messages"]:
                content = message["content"]
                if isinstance(content, str):
                    text += content
                    continue
                for part in content:
                    if part["type"] == "text":
                        text += part["text"]
                    elif part["type"] == "image_url":
                        url = part["image_url"]["url"]
                        assert url.startswith("data:image/png;base64,")
                        data = base64.b64decode(url.split(",", 1)[1])
                        images.append(Image.open(io.BytesIO(data)).convert("RGB"))
            reply = answer(text, images)
            self._send(
                200,
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply},
                            "finish_reason": "stop",
                        }
                    ],
                },
            )

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.log = log  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
