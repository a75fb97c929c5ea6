"""nginx in front of the app: its micro-cache, the stale copies it serves while the database
is away, and its own answers in the app's shape. Real nginx, uwsgi and MariaDB."""
import json
import os
import shutil
import socket
import struct
import threading
import time
import uuid
from email.utils import parsedate_to_datetime

import pytest

from launcher.nginx import Nginx
from launcher.process import free_port
from launcher.wait import wait_for
from tests.helpers.servers import new_base
from tests.helpers.web import api, request, settled_requests

pytestmark = [pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]


def fresh(path):
    """The path with a query parameter the app ignores: a cache key no other test used."""
    return f'{path}{"&" if "?" in path else "?"}t={uuid.uuid4().hex[:8]}'


def test_reads_are_answered_from_the_cache_without_the_app(stack):
    path = fresh('/api/admins?limit=4')
    status, headers, body = request(stack, 'GET', path)
    assert status == 200 and headers['X-Cache-Status'] == 'MISS'
    before = settled_requests(stack)
    for _ in range(20):
        again = request(stack, 'GET', path)
        assert again[0] == 200 and again[2] == body and again[1]['X-Cache-Status'] in ('HIT', 'UPDATING', 'STALE')
        assert again[1]['ETag'] == headers['ETag']
        assert again[1]['X-Request-ID'] != headers['X-Request-ID']  # each answer its own id
    # 20 reads, at most one refresh a second reached uwsgi.
    assert settled_requests(stack) - before <= 2


def test_a_head_on_an_empty_cache_never_empties_the_next_get(stack):
    for route in ('/admins', '/api/admins', '/openapi.json', '/'):
        path = fresh(route)
        status, headers, body = request(stack, 'HEAD', path)
        assert status == 200 and body == b''
        for _ in range(2):
            status, headers, body = request(stack, 'GET', path)
            assert status == 200 and body and len(body) == int(headers['Content-Length']), route


def test_private_requests_pass_the_cache_and_a_writer_reads_its_writes(stack):
    listing = fresh('/api/admins?limit=100')
    assert request(stack, 'GET', listing)[1]['X-Cache-Status'] == 'MISS'
    for private in ({'Authorization': 'Bearer not-checked-on-reads'}, {'X-Consistency-Token': '0-1-1'},
                    {'Cookie': 'wsgiapp_consistency=0-1-1'}):
        assert request(stack, 'GET', listing, headers=private)[1]['X-Cache-Status'] == 'BYPASS'
    name = f'writer {uuid.uuid4().hex[:6]}'
    status, headers, created = api(stack, 'POST', '/api/admins', {'name': name, 'email': 'w@example.com'})
    assert status == 201
    _, _, seen = api(stack, 'GET', listing)  # with the token: at once
    assert created in seen['items']


def test_probes_errors_and_writes_always_reach_the_app(stack):
    for path in ('/healthz', '/readyz', '/api/admins?limit=0'):
        before = settled_requests(stack)
        for _ in range(3):
            request(stack, 'GET', path)
        assert settled_requests(stack, expected=before + 3) == before + 3, path


def test_conditional_gets_through_the_cache_and_gzip(stack):
    path = fresh('/api/admins?limit=3')
    etag = request(stack, 'GET', path)[1]['ETag']
    status, headers, body = request(stack, 'GET', path, headers={'If-None-Match': etag})
    assert status == 304 and body == b'' and headers['ETag'] == etag
    # A cache miss answered by the app itself: the same body has the same tag.
    status, headers, body = request(stack, 'GET', fresh('/api/admins?limit=3'), headers={'If-None-Match': etag})
    assert status == 304 and body == b''
    # nginx's gzip weakens the tag; sent back, it still matches.
    gzipped = {'Accept-Encoding': 'gzip'}
    status, headers, _ = request(stack, 'GET', '/openapi.json', headers=gzipped)
    assert headers['Content-Encoding'] == 'gzip' and headers['ETag'].startswith('W/"')
    status, _, body = request(stack, 'GET', '/openapi.json', headers={**gzipped, 'If-None-Match': headers['ETag']})
    assert status == 304 and body == b''
    assert request(stack, 'GET', path, headers={'If-None-Match': '"other"'})[0] == 200


def test_an_anonymous_reader_sees_a_write_within_the_lifetime_plus_one_second(stack):
    _, headers, created = api(stack, 'POST', '/api/admins', {'name': f'fresh {uuid.uuid4().hex[:6]}',
                                                             'email': 'v0@example.com'})
    item = headers['Location']
    assert request(stack, 'GET', item)[0] == 200  # cached now
    delays = []
    for version in range(1, 4):
        email = f'v{version}@example.com'
        assert api(stack, 'PATCH', item, {'email': email})[0] == 200
        acknowledged = time.monotonic()
        wait_for(lambda email=email: json.loads(request(stack, 'GET', item)[2])['email'] == email, 5,
                 f'an anonymous read to see {email}', interval=0.02)
        delays.append(time.monotonic() - acknowledged)
    assert max(delays) <= 2.0 + 0.25, delays  # WSGIAPP_CACHE_SECONDS (1) + 1, and a poll's slack


def test_while_mariadb_is_away_recent_reads_are_served_stale_and_the_rest_is_a_503(stack):
    pages = [fresh('/admins?limit=2'), fresh('/api/admins?limit=2')]
    dates = {page: request(stack, 'GET', page)[1]['Date'] for page in pages}
    stack.mariadb.stop()
    try:
        time.sleep(2.5)  # past the lifetime and the background refresh: only stale-if-error is left
        for page in pages:
            status, headers, body = request(stack, 'GET', page)
            assert status == 200 and headers['X-Cache-Status'] == 'STALE' and body
            assert headers['Date'] == dates[page]  # when it was made: its age is now - Date
        status, headers, body = request(stack, 'GET', fresh('/api/admins?limit=9'))
        assert status == 503 and headers['Retry-After'] and json.loads(body)['error']['status'] == 503
        status, headers, body = request(stack, 'GET', fresh('/admins?limit=9'))
        assert status == 503 and headers['Retry-After'] and b'<h1>503 Service Unavailable</h1>' in body
        status, headers, body = api(stack, 'POST', '/api/admins', {'name': 'away', 'email': 'a@example.com'})
        assert status == 503 and 'database' in body['error']['message']  # the app's own answer
        assert request(stack, 'GET', '/readyz')[0] == 503
    finally:
        stack.mariadb.start()
    stack.wait_ready()
    wait_for(lambda: request(stack, 'GET', pages[1])[1]['Date'] != dates[pages[1]], 5,
             'the cache to refresh once MariaDB is back', interval=0.1)


def test_stale_copies_are_never_older_than_stale_if_error(stack):
    stack.uwsgi.stop()
    stack.uwsgi.start({**stack.environ(), 'WSGIAPP_STALE_IF_ERROR': '2'})
    page = fresh('/api/admins?limit=2')
    try:
        stack.wait_ready()
        made = parsedate_to_datetime(request(stack, 'GET', page)[1]['Date']).timestamp()
        stack.mariadb.stop()
        seen = []
        while time.time() < made + 6:
            status, headers, _ = request(stack, 'GET', page)
            seen.append((round(time.time() - made, 1), status, headers.get('X-Cache-Status')))
            time.sleep(0.2)
        # Served for the lifetime (1 s), the refresh (1 s) and stale-if-error (2 s), with
        # nginx's whole seconds; never after.
        assert all(status == 200 for age, status, _ in seen if age < 3), seen
        assert all(status == 503 for age, status, _ in seen if age >= 5), seen
    finally:
        stack.mariadb.start()
        stack.uwsgi.stop()
        stack.uwsgi.start(stack.environ())
        stack.wait_ready()


@pytest.mark.parametrize('path', ['/', '/ada', '/admins', '/api/admins', '/api/admins/', '/api/admins/7',
                                  '/api//admins/7', '/api/admins/12345678901', '/a/b', '/healthz', '/readyz',
                                  '/openapi.json', '/api/x', '/api', '/static'])
def test_nginx_refusing_trace_agrees_with_the_apps_routes(stack, path):
    app_status, app_headers, _ = request(stack, 'PUT', path)          # the app answers
    status, headers, body = request(stack, 'TRACE', path)             # nginx answers
    assert (status, headers.get('Allow')) == (app_status, app_headers.get('Allow'))
    assert headers['Content-Type'] == app_headers['Content-Type']
    assert len(headers['X-Request-ID']) == 32 and headers['X-Content-Type-Options'] == 'nosniff'
    assert headers['Strict-Transport-Security'] and headers['Cache-Control'] == 'no-store'
    if headers['Content-Type'].startswith('text/html'):
        assert "default-src 'none'" in headers['Content-Security-Policy'] and f'<h1>{status} '.encode() in body
    elif headers['Content-Type'] == 'application/json':
        assert json.loads(body)['error']['status'] == status


@pytest.mark.parametrize('path, kind', [('/', 'text/html'), ('/api/admins', 'application/json')])
def test_a_body_over_nginxs_limit_is_a_413_in_the_routes_shape(stack, path, kind):
    status, headers, body = request(stack, 'POST', path, b'x' * 70000,
                                    {'Content-Type': 'application/json', 'Authorization': f'Bearer {stack.token()}'})
    assert status == 413 and headers['Content-Type'].startswith(kind) and headers['X-Request-ID']
    assert headers['X-Content-Type-Options'] == 'nosniff'
    if kind == 'application/json':
        assert json.loads(body)['error']['status'] == 413
    else:
        assert b'<h1>413 ' in body


@pytest.mark.parametrize('path', ['/static/style.css', '/favicon.ico', '/robots.txt'])
def test_files_nginx_serves_carry_the_same_headers(stack, path):
    status, headers, _ = request(stack, 'GET', path)
    assert status == 200 and len(headers['X-Request-ID']) == 32
    assert headers['X-Content-Type-Options'] == 'nosniff' and headers['Strict-Transport-Security']


class UwsgiPeer:
    """A unix socket that reads one uwsgi packet per connection, keeps its variables and
    answers 200: what nginx really sends to uwsgi, with nothing in between."""

    def __init__(self, path):
        self.path, self.packets = path, []
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        os.chmod(path, 0o666)  # nginx's workers may run as another user; the directory is private
        self.server.listen(8)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with client:
                _, size, _ = struct.unpack('<BHB', self.read(client, 4))
                data, variables = self.read(client, size), {}
                while data:
                    (length,), data = struct.unpack('<H', data[:2]), data[2:]
                    key, data = data[:length].decode('latin-1'), data[length:]
                    (length,), data = struct.unpack('<H', data[:2]), data[2:]
                    variables[key], data = data[:length].decode('latin-1'), data[length:]
                self.packets.append(variables)
                client.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n')

    @staticmethod
    def read(client, size):
        data = b''
        while len(data) < size:
            data += client.recv(size - len(data))
        return data


def test_the_proxy_header_never_reaches_the_app(stack):
    """httpoxy: a client's `Proxy:` header must not become HTTP_PROXY in the app's environ."""
    base = new_base()
    (base / 'run').mkdir(parents=True)
    base.chmod(0o755)
    peer = UwsgiPeer(base / 'run' / 'peer.sock')
    nginx = Nginx(base, free_port(), peer.path, free_port(), stack.nginx.certificate,
                  user='root' if os.geteuid() == 0 else None, run_dir=base / 'run')
    try:
        nginx.start()
        status, _, _ = request(stack, 'GET', '/x', headers={'Proxy': 'http://evil.example:8080',
                                                            'Authorization': 'Bearer x'}, port=nginx.tls_port)
        assert status == 200 and peer.packets
        assert 'HTTP_PROXY' not in peer.packets[-1], peer.packets[-1]
        assert peer.packets[-1]['HTTP_AUTHORIZATION'] == 'Bearer x'  # other headers do pass
        assert peer.packets[-1]['WSGIAPP_STALE_LOCATION'] == '@wsgiapp_stale'
    finally:
        nginx.stop()
        peer.server.close()
        shutil.rmtree(base, ignore_errors=True)


def test_a_burst_on_a_new_entry_reaches_the_app_once(stack):
    """The cache lock: 16 clients ask at once for what is not cached; one request fills it."""
    path, barrier, statuses = fresh('/api/admins?limit=7'), threading.Barrier(16), []

    def read():
        barrier.wait()
        statuses.append(request(stack, 'GET', path)[0])
    before = settled_requests(stack)
    threads = [threading.Thread(target=read) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 16
    assert settled_requests(stack) - before == 1


def test_gzip_replaces_content_length_with_chunks_as_the_readme_says(stack):
    status, headers, body = request(stack, 'GET', '/openapi.json', headers={'Accept-Encoding': 'gzip'})
    assert headers['Content-Encoding'] == 'gzip' and 'Content-Length' not in headers
    assert headers['Transfer-Encoding'] == 'chunked'
    status, headers, body = request(stack, 'GET', '/openapi.json')
    assert int(headers['Content-Length']) == len(body)  # uncompressed: the app's exact length


def test_a_path_that_is_not_utf8_is_a_400_before_the_method_is_weighed(stack):
    assert request(stack, 'POST', '/%FF')[0] == 400
    assert request(stack, 'POST', '/')[0] == 405


def test_a_burst_on_an_answer_no_cache_may_keep_is_not_held_by_the_lock(stack):
    """nginx's cache lock also holds requests whose answer turns out not cacheable (an error,
    a probe): they must wait at most the lock's timeout (100 ms), not nginx's 500 ms polls."""
    for path in (fresh('/api/admins?limit=0'), '/healthz'):
        barrier, took = threading.Barrier(16), []

        def read(path=path, barrier=barrier, took=took):
            barrier.wait()
            started = time.monotonic()
            request(stack, 'GET', path)
            took.append(time.monotonic() - started)
        threads = [threading.Thread(target=read) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert max(took) < 0.45, (path, sorted(took))
