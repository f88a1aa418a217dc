"""A Hugging Face Hub on 127.0.0.1: the HTTP endpoints ``huggingface_hub`` uses to create a
repo, upload a folder (preupload, Git LFS batch / PUT / verify, NDJSON commit) and download
a file (HEAD + GET of ``/{repo}/resolve/{revision}/{path}``), with the repos kept in memory;
the model card's metadata is checked as ``/api/validate-yaml`` does.

Like the Hub, ``*.safetensors`` files are LFS files (the repo's ``.gitattributes``) and every
write needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt")


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)


class FakeHub:
    """The server and what it holds: ``repos``, the LFS objects, and every request made."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    server_hub: FakeHub
    protocol_version = "HTTP/1.1"

    # -- plumbing -------------------------------------------------------------------------------
    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _send(
        self, status: int, payload: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.server_hub.token}":
            return True
        self._send(401, {"error": "Invalid credentials in Authorization header"})
        return False

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.server_hub.repos.get(repo_id)
        if repo is None:
            self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        return repo

    # -- endpoints ------------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        hub = self.server_hub
        path = unquote(urlparse(self.path).path)
        hub.requests.append(("POST", path))
        body = self._body()
        if path == "/api/validate-yaml":  # the model card's metadata (no token needed)
            content = json.loads(body)["content"]
            try:
                yaml.safe_load(content.split("---")[1])
            except (IndexError, yaml.YAMLError) as err:
                self._send(400, {"error": f"invalid model card metadata: {err}"})
                return
            self._send(200, {"errors": [], "warnings": []})
            return
        if not self._authorized():
            return
        parts = path.strip("/").split("/")
        if path == "/api/repos/create":
            request = json.loads(body)
            repo_id = "/".join(p for p in (request.get("organization"), request["name"]) if p)
            if repo_id in hub.repos:
                self._send(409, {"error": "You already created this model repo"})
                return
            hub.repos[repo_id] = Repo(private=request.get("visibility") == "private")
            self._send(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id, "id": repo_id})
        elif parts[:2] == ["api", "models"] and parts[-2] == "preupload":
            repo = self._repo("/".join(parts[2:-2]))
            if repo is None:
                return
            files = json.loads(body)["files"]
            modes = [
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                    "shouldIgnore": False,
                }
                for f in files
            ]
            self._send(200, {"files": modes})
        elif path.endswith(".git/info/lfs/objects/batch"):
            request = json.loads(body)
            objects = [
                {
                    "oid": o["oid"],
                    "size": o["size"],
                    "authenticated": True,
                    "actions": {
                        "upload": {"href": f"{hub.url}/lfs-storage/{o['oid']}"},
                        "verify": {"href": f"{hub.url}/lfs-verify"},
                    },
                }
                for o in request["objects"]
            ]
            self._send(200, {"transfer": "basic", "objects": objects})
        elif path == "/lfs-verify":
            request = json.loads(body)
            data = hub.lfs.get(request["oid"])
            ok = data is not None and len(data) == request["size"]
            self._send(200 if ok else 404, {"ok": ok})
        elif parts[:2] == ["api", "models"] and parts[-2] == "commit":
            self._commit("/".join(parts[2:-2]), body)
        else:
            self._send(404, {"error": f"no endpoint {path}"})

    def _commit(self, repo_id: str, body: bytes) -> None:
        hub = self.server_hub
        repo = self._repo(repo_id)
        if repo is None:
            return
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header, operations = lines[0], lines[1:]
        assert header["key"] == "header"
        changed: dict[str, bytes] = {}
        for op in operations:
            value = op["value"]
            if op["key"] == "file":
                changed[value["path"]] = base64.b64decode(value["content"])
            elif op["key"] == "lfsFile":
                data = hub.lfs.get(value["oid"])
                if data is None or hashlib.sha256(data).hexdigest() != value["oid"]:
                    self._send(400, {"error": f"LFS object {value['oid']} was not uploaded"})
                    return
                changed[value["path"]] = data
            else:
                self._send(400, {"error": f"unexpected operation {op['key']}"})
                return
        repo.files.update(changed)
        oid = hashlib.sha1(json.dumps(lines).encode()).hexdigest()
        repo.commits.append({"oid": oid, "summary": header["value"]["summary"], "files": changed})
        self._send(
            200,
            {
                "commitUrl": f"{hub.url}/{repo_id}/commit/{oid}",
                "commitOid": oid,
                "pullRequestUrl": None,
            },
        )

    def do_PUT(self) -> None:  # noqa: N802 - http.server's name
        hub = self.server_hub
        path = urlparse(self.path).path
        hub.requests.append(("PUT", path))
        data = self._body()
        oid = path.rsplit("/", 1)[-1]
        if not path.startswith("/lfs-storage/") or hashlib.sha256(data).hexdigest() != oid:
            self._send(400, {"error": "the content does not match its oid"})
            return
        hub.lfs[oid] = data
        self._send(200)

    def _resolve(self, head: bool) -> None:
        hub = self.server_hub
        path = unquote(urlparse(self.path).path)
        hub.requests.append(("HEAD" if head else "GET", path))
        before, sep, after = path.strip("/").partition("/resolve/")
        repo = hub.repos.get(before) if sep else None
        if repo is None or not repo.commits:
            self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return
        if repo.private and self.headers.get("Authorization") != f"Bearer {hub.token}":
            self._send(401, {"error": "private repo"}, {"X-Error-Code": "RepoNotFound"})
            return
        _revision, _, filename = after.partition("/")
        data = repo.files.get(filename)
        if data is None:
            self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", repo.commits[-1]["oid"])
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self._resolve(head=True)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._resolve(head=False)
