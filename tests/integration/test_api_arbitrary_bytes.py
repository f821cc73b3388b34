"""Whatever bytes a caller puts in a header, a path parameter, a query string or a body of any
internal API route, the answer is never a 5xx while PostgreSQL, Redis and Stripe are up.

Requests are written as raw bytes on a socket (aiohttp's client refuses many of them); Hypothesis
runs in a thread so the service keeps serving on the test's event loop."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from urllib.parse import quote_from_bytes

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.support.helpers import TOKEN, running_service
from tests.support.stripe_server import StripeServer
from worker.api.app import create_internal_app
from worker.config import Settings

QUERY_NAMES = ("limit", "type", "before")
BODY_FIELDS = (
    "since", "run_id", "type", "plan", "interval", "seats", "requested_by_role", "member_count",
    "storage_used_bytes", "has_payment_method", "dry_run", "members", "amount", "idempotency_key", "reason",
)  # fmt: skip
HEADER_NAMES = (b"Authorization", b"X-Request-Id", b"Content-Type", b"Accept", b"Host", b"X-Anything")

# Values at the edges parsers get wrong (other scripts' digits pass str.isdigit() but not int()),
# then any bytes, and any text as UTF-8.
EDGES = [
    "²", "٣", "-1", "0", "1e3", " 1", "1\n", "9223372036854775808", "9" * 40, "\x00", "%", "%zz",
    "../..", "evt_1", "ws_1", "null", "[]", "{}", "\ud800",
]  # fmt: skip
raw = st.sampled_from(EDGES).map(lambda s: s.encode("utf-8", "surrogatepass")) | (
    st.binary(max_size=40) | st.text(max_size=12).map(lambda s: s.encode("utf-8", "surrogatepass"))
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _encode(value: bytes, as_is: bool) -> bytes:
    """A value in a URL: sent as it is (then the server's parser judges it) or percent-encoded."""
    return value if as_is else quote_from_bytes(value, safe="").encode()


@st.composite
def requests(draw: st.DrawFn, method: str, path: str) -> bytes:
    as_is = draw(st.booleans())
    target = re.sub(rb"\{[a-z_]+\}", lambda _: _encode(draw(raw), as_is), path.encode())
    pairs = [(name.encode(), draw(raw)) for name in QUERY_NAMES if draw(st.booleans())]
    pairs += draw(st.lists(st.tuples(raw, raw), max_size=2))
    if pairs:
        target += b"?" + b"&".join(_encode(k, as_is) + b"=" + _encode(v, as_is) for k, v in pairs)
    if draw(st.booleans()):
        body = draw(raw)
    else:
        fields = draw(st.dictionaries(st.sampled_from(BODY_FIELDS), json_values, max_size=4))
        body = json.dumps(fields).encode()
    headers = {b"Host": b"x", b"Authorization": b"Bearer " + TOKEN.encode()}
    for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=3, unique=True)):
        headers[name] = draw(st.sampled_from([b"", b"Bearer "]) | raw.map(lambda b: b"Bearer " + b) | raw)
    lines = [method.encode() + b" " + target + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in headers.items()]
    lines += [b"Connection: close", b"Content-Length: " + str(len(body)).encode()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _status(port: int, request: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert re.match(rb"HTTP/1\.[01] \d{3} ", answer), (request, answer)
    return int(answer.split(b" ", 2)[1])


async def test_arbitrary_bytes_anywhere_never_get_a_5xx(settings: Settings, stripe_server: StripeServer):
    stripe = {"stripe_api_key": stripe_server.api_key, "stripe_api_base": stripe_server.url}
    async with running_service(Settings(**{**settings.__dict__, **stripe}), worker=False) as svc:
        app = create_internal_app(svc.services)
        routes = sorted({(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"})
        assert len(routes) >= 15, routes  # every route of the internal API, path params included
        port = int(svc.api_url.rsplit(":", 1)[1])
        seen: dict[int, int] = {}

        @given(data=st.data())
        @hypothesis_settings(
            max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def never_5xx(method: str, path: str, data: st.DataObject) -> None:
            request = data.draw(requests(method, path))
            status = _status(port, request)
            seen[status] = seen.get(status, 0) + 1
            assert status < 500, request

        for method, path in routes:  # each route gets its share of examples
            await asyncio.to_thread(never_5xx, method, path)
        assert any(200 <= s < 300 for s in seen) and 400 in seen, seen  # requests reached handlers
