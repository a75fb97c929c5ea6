"""Requests to a running stack or cluster, and uwsgi's own protocol."""
import http.client
import json
import socket
import struct
import time
from urllib.parse import urlsplit

from launcher.wait import TimedOut, wait_for


def request(stack, method, path, body=None, headers=None, port=None, tls=True, timeout=30):
    """(status, headers, body) from the stack's (or cluster edge's) HTTPS port, trusting its
    certificate authority only; or from its HTTP port (tls=False). `port` replaces the port."""
    where = urlsplit(stack.url if tls else stack.http_url)
    if tls:
        connection = http.client.HTTPSConnection(where.hostname, port or where.port, timeout=timeout,
                                                 context=stack.ssl_context())
    else:
        connection = http.client.HTTPConnection(where.hostname, port or where.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def call(stack, method, path, body=None, headers=None, timeout=30):
    """request() over HTTPS for a load that counts failures: ('error', {}, what happened)
    when the connection itself failed, instead of raising."""
    try:
        return request(stack, method, path, body, headers, timeout=timeout)
    except (OSError, http.client.HTTPException) as error:
        return 'error', {}, str(error).encode()


def api(stack, method, path, payload=None, token=True):
    """(status, headers, decoded JSON or None): a JSON request, with the stack's token."""
    headers = {'Content-Type': 'application/json'}
    if token:
        headers['Authorization'] = f'Bearer {stack.token()}'
    body = None if payload is None else json.dumps(payload).encode()
    status, headers, data = request(stack, method, path, body, headers)
    return status, headers, (json.loads(data) if data else None)


def uwsgi_packet(variables):
    """A uwsgi protocol request: modifier1 0, the size of the vars, modifier2 0, then each
    var as little-endian 16-bit length + bytes."""
    body = b''.join(struct.pack('<H', len(k)) + k + struct.pack('<H', len(v)) + v
                    for k, v in ((k.encode(), v.encode()) for k, v in variables.items()))
    return struct.pack('<BHB', 0, len(body), 0) + body


def uwsgi_get(path, **more):
    """A GET as nginx would send it over the uwsgi protocol."""
    return uwsgi_packet({'REQUEST_METHOD': 'GET', 'PATH_INFO': path, 'QUERY_STRING': '',
                         'SERVER_PROTOCOL': 'HTTP/1.1', 'SERVER_NAME': 'x', 'SERVER_PORT': '80', **more})


def read_all(client):
    """Everything a connected socket sends until it closes."""
    return b''.join(iter(lambda: client.recv(65536), b''))


def ask_socket(path, packet, timeout=5):
    """The whole answer to `packet` sent to the unix socket at `path`."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(timeout)
        client.connect(str(path))
        client.sendall(packet)
        return read_all(client)


def served_requests(stack):
    """Requests served by uwsgi's workers, from its stats socket."""
    return sum(worker['requests'] for worker in stack.uwsgi.stats_json()['workers'])


def settled_requests(stack, expected=None, seconds=3):
    """The stats socket's count once it stops moving (or reaches `expected`): a worker
    counts a request after it has sent the answer, so the count may lag by a moment.
    After `seconds`, the last count, which the caller's assertion then judges."""
    counts = [served_requests(stack)]

    def settled():
        time.sleep(0.2)
        counts.append(served_requests(stack))
        return counts[-1] == counts[-2] and expected in (None, counts[-1])
    try:
        wait_for(settled, seconds, 'the stats count to settle', interval=0)
    except TimedOut:
        pass
    return counts[-1]
