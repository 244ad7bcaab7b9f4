"""Fakes of the ListenBrainz and Last.fm APIs on 127.0.0.1: real HTTP, documented behaviour.

ListenBrainz: `GET /1/user/{name}/listens?min_ts=&count=` (the `count` oldest listens after
`min_ts`, newest first in the payload), `X-RateLimit-*` headers, `Authorization: Token`.
Last.fm: `GET /2.0/?method=user.getrecenttracks&...&format=json` (newest first, `from`/`to`
inclusive, 200 a page, a now-playing entry on page 1, errors as `{"error": n}`).
Faults are queued per service and served in order, one per request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass
class Fault:
    status: int = 500
    body: bytes = b'{"error": "boom"}'
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeHistory:
    """Both services' state: listens (start time, artist, title, extra) and queued faults."""

    listens: list[dict[str, Any]] = field(default_factory=list)  # ListenBrainz payload items
    scrobbles: list[dict[str, Any]] = field(default_factory=list)  # Last.fm track items
    now_playing: dict[str, Any] | None = None
    lb_user: str = "listener"
    lb_token: str | None = None  # when set, requests must carry it
    lb_remaining: int | None = None  # X-RateLimit-Remaining to send (None: 10)
    lb_reset_in: int = 7
    lastfm_user: str = "listener"
    lastfm_key: str = "key"
    faults: dict[str, list[Fault]] = field(default_factory=lambda: {"lb": [], "lastfm": []})
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def add_listen(
        self, start: int, artist: str, title: str, *, duration_ms: int | None = None, **meta: Any
    ) -> None:
        info: dict[str, Any] = {}
        if duration_ms is not None:
            info["duration_ms"] = duration_ms
        track: dict[str, Any] = {"artist_name": artist, "track_name": title, **meta}
        track["additional_info"] = info
        self.listens.append({"listened_at": start, "track_metadata": track})

    def add_scrobble(self, start: int, artist: str, title: str, album: str = "") -> None:
        self.scrobbles.append(
            {
                "artist": {"#text": artist, "mbid": ""},
                "name": title,
                "album": {"#text": album},
                "date": {"uts": str(start), "#text": "..."},
            }
        )

    def fail(self, service: str, *faults: Fault) -> None:
        self.faults[service].extend(faults)

    def count(self, service: str) -> int:
        return sum(1 for s, _ in self.requests if s == service)

    # -- the two APIs ----------------------------------------------------------------------

    def listenbrainz(
        self, path: str, query: dict[str, str], headers: Any
    ) -> tuple[int, Any, dict[str, str]]:
        rate = {
            "X-RateLimit-Remaining": str(10 if self.lb_remaining is None else self.lb_remaining),
            "X-RateLimit-Reset-In": str(self.lb_reset_in),
            "X-RateLimit-Limit": "30",
        }
        if path != f"/1/user/{self.lb_user}/listens":
            return 404, {"code": 404, "error": "Cannot find user"}, rate
        if self.lb_token is not None and headers.get("Authorization") != f"Token {self.lb_token}":
            return 401, {"code": 401, "error": "You need to provide an Authorization header."}, rate
        min_ts = int(query.get("min_ts", 0))
        count = min(int(query.get("count", 25)), 1000)
        after = sorted(
            (x for x in self.listens if x["listened_at"] > min_ts), key=lambda x: x["listened_at"]
        )
        page = list(reversed(after[:count]))
        body = {"payload": {"count": len(page), "listens": page, "user_id": self.lb_user}}
        return 200, body, rate

    def lastfm(self, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        if query.get("api_key") != self.lastfm_key:
            return (
                403,
                {
                    "error": 10,
                    "message": "Invalid API key - You must be granted a valid key by last.fm",
                },
                {},
            )
        if query.get("user") != self.lastfm_user:
            return 404, {"error": 6, "message": "User not found"}, {}
        since, until = int(query.get("from", 0)), int(query.get("to", 2**40))
        limit, number = min(int(query.get("limit", 50)), 200), int(query.get("page", 1))
        chosen = [s for s in self.scrobbles if since <= int(s["date"]["uts"]) <= until]
        chosen.sort(key=lambda s: -int(s["date"]["uts"]))
        pages = (len(chosen) + limit - 1) // limit
        tracks = chosen[(number - 1) * limit : number * limit]
        if number == 1 and self.now_playing is not None:
            tracks = [{**self.now_playing, "@attr": {"nowplaying": "true"}}, *tracks]
        attr = {
            "user": self.lastfm_user,
            "page": str(number),
            "perPage": str(limit),
            "totalPages": str(pages),
            "total": str(len(chosen)),
        }
        return 200, {"recenttracks": {"track": tracks, "@attr": attr}}, {}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        service = "lastfm" if parts.path.startswith("/2.0") else "lb"
        with self.server.lock:
            fake.requests.append((service, query))
            fault = fake.faults[service].pop(0) if fake.faults[service] else None
            if fault is None:
                if service == "lb":
                    status, body, headers = fake.listenbrainz(parts.path, query, self.headers)
                else:
                    status, body, headers = fake.lastfm(query)
                raw = json.dumps(body).encode()
            else:
                status, raw, headers = fault.status, fault.body, fault.headers
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeHistory) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake
        self.lock = threading.Lock()


@pytest.fixture
def fake_history() -> Iterator[FakeHistory]:
    fake = FakeHistory()
    server = _Server(fake)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
