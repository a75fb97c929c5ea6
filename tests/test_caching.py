"""What the app tells caches: a strong ETag on every 200 read, If-None-Match answered with a
304, and a Cache-Control that lets nginx keep reads for WSGIAPP_CACHE_SECONDS (and serve
them stale for WSGIAPP_STALE_IF_ERROR while the database is away), and nothing else."""
import hashlib
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest

from wsgiapp import config
from wsgiapp.app import Application, etag_matches

CACHEABLE = 'public, max-age=0, s-maxage=1, stale-while-revalidate=1, stale-if-error=60'


@pytest.mark.parametrize('path', ['/', '/ada', '/admins', '/api/admins', '/api/admins/ID', '/openapi.json'])
def test_every_read_has_a_weak_etag_of_its_body_and_may_be_cached(app, add, path):
    path = path.replace('ID', str(add('ada')))
    response = app.get(path)
    assert response.headers['ETag'] == 'W/"%s"' % hashlib.blake2b(response.body, digest_size=16).hexdigest()
    assert response.headers['Cache-Control'] == CACHEABLE
    head = app.head(path)
    assert head.headers['ETag'] == response.headers['ETag'] and head.body == b''


def test_the_etag_changes_with_the_data(app, add):
    before = app.get('/api/admins').headers['ETag']
    add('grace')
    assert app.get('/api/admins').headers['ETag'] != before


@pytest.mark.parametrize('if_none_match', ['ETAG', 'W/ETAG', '"other", ETAG', '"a",W/ETAG , "b"', '*'])
def test_if_none_match_gives_304_without_a_body(app, add, if_none_match):
    add('ada')
    first = app.get('/api/admins')
    etag = first.headers['ETag']
    opaque = etag.removeprefix('W/')
    for method in (app.get, app.head):
        response = method('/api/admins', headers={'If-None-Match': if_none_match.replace('ETAG', opaque)},
                          status=304)
        assert response.body == b''
        # RFC 9110 15.4.5: the validators and caching headers a 200 would have carried.
        assert response.headers['ETag'] == etag and response.headers['Cache-Control'] == CACHEABLE
        assert 'Content-Type' not in response.headers and response.headers['X-Request-ID']


@pytest.mark.parametrize('if_none_match', ['"nope"', 'W/"nope"', '', 'ETAGx'])
def test_a_different_tag_gets_the_full_answer(app, add, if_none_match):
    opaque = app.get('/').headers['ETag'].removeprefix('W/')
    response = app.get('/', headers={'If-None-Match': if_none_match.replace('ETAG', opaque[:-1])})
    assert response.status_int == 200 and b'hello world' in response.body


def test_404_may_be_cached_but_other_errors_and_writes_may_not(app, auth):
    missing = app.get('/api/admins/999', status=404)
    assert missing.headers['Cache-Control'] == CACHEABLE and 'ETag' not in missing.headers
    assert app.get('/api/admins?limit=0', status=400).headers['Cache-Control'] == 'no-store'
    assert app.put('/api/admins', status=405).headers['Cache-Control'] == 'no-store'
    created = app.post_json('/api/admins', {'name': 'ada', 'email': 'a@example.com'}, headers=auth, status=201)
    assert created.headers['Cache-Control'] == 'no-store' and 'ETag' not in created.headers


def test_probes_are_never_cached(app):
    for path in ('/healthz', '/readyz'):
        response = app.get(path)
        assert response.headers['Cache-Control'] == 'no-store' and response.headers['ETag']


def test_database_away_is_a_503_no_cache_keeps(make_app, sql):
    app = make_app(database=None, database_problem='DATABASE_URL is not set')
    response = app.get('/api/admins', status=503)
    assert response.headers['Cache-Control'] == 'no-store' and 'X-Accel-Redirect' not in response.headers


def test_behind_nginx_a_read_the_app_cannot_answer_goes_to_the_stale_copy(make_app, sql, auth):
    """nginx names its stale location; a read (not a probe, not a write) is sent there."""
    app = make_app(database=None, database_problem='DATABASE_URL is not set')
    nginx = {'WSGIAPP_STALE_LOCATION': '@wsgiapp_stale'}
    for method in (app.get, app.head):
        response = method('/api/admins', extra_environ=nginx, status=503)
        assert response.headers['X-Accel-Redirect'] == '@wsgiapp_stale'
        assert response.headers['Retry-After']  # and without nginx, the plain 503 stands
    assert 'X-Accel-Redirect' not in app.get('/readyz', extra_environ=nginx, status=503).headers
    write = app.post_json('/api/admins', {'name': 'a', 'email': 'a@b.c'}, headers=auth, extra_environ=nginx,
                          status=503)
    assert 'X-Accel-Redirect' not in write.headers
    assert 'X-Accel-Redirect' not in app.get('/api/admins', extra_environ={'WSGIAPP_STALE_LOCATION': '/x'},
                                             status=503).headers


def test_every_answer_says_when_it_was_made(app):
    import email.utils
    import time
    made = email.utils.parsedate_to_datetime(app.get('/').headers['Date']).timestamp()
    assert abs(made - time.time()) < 2


def test_the_two_settings_drive_the_header(make_app, sql):
    settings = config.from_environ({'WSGIAPP_CACHE_SECONDS': '5', 'WSGIAPP_STALE_IF_ERROR': '0'})
    app = make_app(cache_seconds=settings.cache_seconds, stale_if_error=settings.stale_if_error)
    expected = 'public, max-age=0, s-maxage=5, stale-while-revalidate=1, stale-if-error=0'
    assert app.get('/').headers['Cache-Control'] == expected


def test_etag_matching_is_weak_and_exact():
    assert etag_matches('W/"a"', 'W/"a"') and etag_matches('"a"', 'W/"a"') and etag_matches(' "b" , "a"', 'W/"a"')
    assert etag_matches('*', 'W/"a"')
    assert not etag_matches('"ab"', 'W/"a"') and not etag_matches(None, 'W/"a"') and not etag_matches('a', 'W/"a"')


def test_304_is_valid_pep3333():
    """wsgiref's validator: a 304 carries no Content-Type and no body."""
    checked = validator(Application(config.from_environ({})))

    def get(**extra):
        environ = {'REQUEST_METHOD': 'GET', 'PATH_INFO': '/', 'SCRIPT_NAME': '', 'QUERY_STRING': '', **extra}
        setup_testing_defaults(environ)
        seen = []
        result = checked(environ, lambda status, headers, exc_info=None: seen.append((status, dict(headers))))
        body = b''.join(result)
        result.close()
        return seen[0][0], seen[0][1], body
    status, headers, body = get()
    assert status == '200 OK' and body
    status, headers, body = get(HTTP_IF_NONE_MATCH=headers['ETag'])
    assert status == '304 Not Modified' and body == b'' and 'Content-Type' not in headers
