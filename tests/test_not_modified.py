"""A 304 says what its 200 says (RFC 9110 15.4.5): the same Cache-Control, Content-Location,
ETag, Expires and Vary, and a Date, on every cacheable route, through a real single stack
(nginx, uwsgi, MariaDB): from nginx's micro-cache on a MISS and on a HIT, and from nginx's
own static files, with and without Accept-Encoding: gzip; and the app's own 304 in process.

The app's ETag is weak from the start, so nginx's gzip, which weakens a strong tag on the
200 it compresses and never sees the 304, has nothing to change: its routes repeat the very
tag. nginx's own static files keep nginx's strong tag, weakened on a gzipped 200 only: there
the tags are compared without W/ (If-None-Match compares weakly)."""
import http.client
import uuid
from urllib.parse import urlsplit

import pytest

from tests.helpers.web import api

pytestmark = [pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]

# What a 304 must repeat of its 200 (RFC 9110 15.4.5); Date is compared for presence only.
REPEATED = ('Cache-Control', 'Content-Location', 'ETag', 'Expires', 'Vary')
APP_ROUTES = ('/', '/%E5%BC%A0%E4%B8%89', '/admins', '/api/admins', '/api/admins/ID', '/openapi.json')
STATIC = '/static/style.css'
ENCODINGS = {'identity': {}, 'gzip': {'Accept-Encoding': 'gzip'}}
HITS = ('HIT', 'UPDATING', 'STALE')  # an entry in the cache, however fresh


def get(stack, path, headers=None):
    """(status, {header name: [every value]}, body): repeated headers are all kept."""
    where = urlsplit(stack.url)
    connection = http.client.HTTPSConnection(where.hostname, where.port, timeout=30, context=stack.ssl_context())
    try:
        connection.request('GET', path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        names = {name.lower() for name, _ in response.getheaders()}
        return response.status, {canonical(name): response.msg.get_all(name) for name in names}, body
    finally:
        connection.close()


def canonical(name):
    return 'ETag' if name == 'etag' else name.title()


def said(headers):
    """What a 304 must repeat, as one comparable value (ETag apart when nginx weakened it)."""
    return {name: headers.get(name) for name in REPEATED} | {'Date': 'Date' in headers}


def opaque(headers):
    """nginx's static ETag without the W/ its gzip puts on what it compresses."""
    return [tag.removeprefix('W/') for tag in headers.get('ETag', [])]


def fresh(path):
    """The path with a query the app ignores: a cache key no other request used."""
    return f'{path}?t={uuid.uuid4().hex[:10]}'


@pytest.fixture(scope='module')
def routes(stack):
    """The routes, with rows enough that the listing and the page are over gzip_min_length."""
    ids = []
    for number in range(10):
        status, _, item = api(stack, 'POST', '/api/admins',
                              {'name': f'not modified {uuid.uuid4().hex[:12]} {number}',
                               'email': f'not-modified-{number}@example.com'})
        assert status == 201
        ids.append(item['id'])
    return [route.replace('ID', str(ids[0])) for route in APP_ROUTES]


def pair(stack, path, encoding):
    """(200, 304) for `path`, the 304 asked with the 200's ETag, both through nginx, within
    one second (their Date alike): nginx's `expires 7d` says a time 7 days from the answer's
    own second, so a pair that straddles a second differs by it. Three tries."""
    headers = ENCODINGS[encoding]
    for _ in range(3):
        status, ok, body = get(stack, path, headers)
        assert status == 200 and body, (path, status)
        status, not_modified, body = get(stack, path, {**headers, 'If-None-Match': ok['ETag'][0]})
        assert status == 304 and body == b'', (path, status)
        if ok.get('Date') == not_modified.get('Date'):
            break
    return ok, not_modified


@pytest.mark.parametrize('encoding', ENCODINGS)
def test_a_304_from_the_cache_says_what_its_200_says_on_a_miss_and_on_a_hit(stack, routes, encoding):
    for route in routes:
        headers = ENCODINGS[encoding]
        first = fresh(route)
        status, ok, _ = get(stack, first, headers)
        assert status == 200 and ok['X-Cache-Status'] == ['MISS'], route
        # A MISS: another key, so the 304 is made for an entry nginx has just fetched.
        status, not_modified, _ = get(stack, fresh(route), {**headers, 'If-None-Match': ok['ETag'][0]})
        assert (status, not_modified['X-Cache-Status']) == (304, ['MISS']), route
        assert said(not_modified) == said(ok), (route, ok, not_modified)
        # A HIT: the first key again, its 200 and its 304 from the cache.
        status, ok_hit, _ = get(stack, first, headers)
        status_hit, not_modified_hit, _ = get(stack, first, {**headers, 'If-None-Match': ok['ETag'][0]})
        assert status == 200 and status_hit == 304, route
        assert ok_hit['X-Cache-Status'][0] in HITS and not_modified_hit['X-Cache-Status'][0] in HITS, route
        assert said(not_modified_hit) == said(ok_hit) == said(ok), (route, ok_hit, not_modified_hit)
        assert not_modified_hit['ETag'] == ok_hit['ETag'] == ok['ETag'], route


@pytest.mark.parametrize('method', ['GET', 'HEAD'])
@pytest.mark.parametrize('route', APP_ROUTES)
def test_the_apps_own_304_says_what_its_200_says(app, add, route, method):
    """The app's 304 (its If-None-Match, as a private read past nginx's cache gets it; nginx
    strips the header from what it may store), and Vary on what nginx may compress."""
    path = route.replace('ID', str(add('ada')))
    ok = app.request(path, method=method)
    not_modified = app.request(path, method=method, headers={'If-None-Match': ok.headers['ETag']}, status=304)
    for name in REPEATED:
        assert not_modified.headers.getall(name) == ok.headers.getall(name), (name, path)
    assert 'Date' in ok.headers and 'Date' in not_modified.headers
    assert ok.headers.getall('Vary') == ['Accept-Encoding']


def test_the_app_says_vary_only_on_what_nginx_may_compress(app, add):
    assert 'Vary' not in app.get('/healthz').headers  # text/plain: gzip_types leaves it
    assert app.get('/api/admins/999', status=404).headers['Vary'] == 'Accept-Encoding'  # JSON
    assert app.get('/no/such/page', status=404).headers['Vary'] == 'Accept-Encoding'  # HTML


@pytest.mark.parametrize('encoding', ENCODINGS)
def test_a_304_for_a_static_file_says_what_its_200_says(stack, encoding):
    ok, not_modified = pair(stack, STATIC, encoding)
    def without_etag(headers):
        return {name: value for name, value in said(headers).items() if name != 'ETag'}
    assert without_etag(not_modified) == without_etag(ok) and opaque(not_modified) == opaque(ok), (ok, not_modified)
    assert ok['Expires'] and ok['Cache-Control']  # nginx's `expires 7d`
    # The site's own headers, said again by the location's add_header.
    for each in (ok, not_modified):
        assert each['X-Content-Type-Options'] == ['nosniff'] and each['Strict-Transport-Security'] and \
            each['X-Request-Id']


@pytest.mark.parametrize('encoding', ENCODINGS)
def test_what_nginx_may_compress_says_vary_once_and_the_rest_never(stack, routes, encoding):
    """Vary: Accept-Encoding, once, on the HTML and JSON answers and CSS (gzip may compress
    them, text/html always), on their 200 and 304; not on text/plain, which gzip never touches."""
    for route in [*routes, STATIC]:
        ok, not_modified = pair(stack, fresh(route), encoding)
        assert ok['Vary'] == not_modified['Vary'] == ['Accept-Encoding'], route
    status, headers, _ = get(stack, '/healthz', ENCODINGS[encoding])
    assert status == 200 and 'Vary' not in headers


def test_one_cache_entry_serves_every_encoding(stack, routes):
    """uwsgi_ignore_headers Vary: the app's Vary does not split the entry per Accept-Encoding."""
    path = fresh('/api/admins')
    status, first, _ = get(stack, path, {'Accept-Encoding': 'gzip'})
    assert status == 200 and first['X-Cache-Status'] == ['MISS'] and first['Content-Encoding'] == ['gzip']
    for encoding in ('identity', 'br', 'gzip, deflate, br', 'deflate', 'gzip;q=0'):
        status, again, body = get(stack, path, {'Accept-Encoding': encoding})
        assert status == 200 and again['X-Cache-Status'][0] in HITS, encoding
        if encoding.startswith('gzip,'):
            assert again['Content-Encoding'] == ['gzip'], encoding
        else:
            assert 'Content-Encoding' not in again and body.startswith(b'{"items":'), encoding


def test_a_304_repeats_the_very_etag_of_a_gzipped_200(stack, routes):
    """The app's tag is weak from the start: nginx's gzip has nothing to weaken."""
    ok, not_modified = pair(stack, fresh('/api/admins'), 'gzip')
    assert ok['Content-Encoding'] == ['gzip']
    assert not_modified['ETag'] == ok['ETag']
