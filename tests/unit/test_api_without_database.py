"""The JSON API through the whole application (WebTest, lint on) with no database: everything
a request is refused for before the database is asked (the bearer token, the query, the
body, the Idempotency-Key) is answered; a request that passes all of it gets 503."""
import json

import pytest
import webtest

from wsgiapp import config
from wsgiapp.app import Application

TOKEN = 'unit-token'
AUTH = {'Authorization': f'Bearer {TOKEN}'}


@pytest.fixture
def api():
    return webtest.TestApp(Application(config.from_environ({'WSGIAPP_API_TOKEN': TOKEN,
                                                            'WSGIAPP_MAX_BODY': '1024'})), lint=True)


def post(api, body, status, headers=AUTH, content_type='application/json', path='/api/admins', method='POST'):
    return api.request(path, method=method, body=body, status=status, expect_errors=True,
                       headers={**headers, **({'Content-Type': content_type} if content_type else {})})


def error(response, status, message):
    assert response.status_int == status
    assert response.headers['Content-Type'] == 'application/json'
    assert response.headers['Cache-Control'] == 'no-store'
    assert response.json == {'error': {'status': status, 'message': message}}


def test_writes_are_403_when_no_token_is_configured():
    bare = webtest.TestApp(Application(config.from_environ({})), lint=True)
    for method, path in [('POST', '/api/admins'), ('PATCH', '/api/admins/1'), ('DELETE', '/api/admins/1')]:
        response = post(bare, b'{}', 403, path=path, method=method)
        error(response, 403, 'writes are disabled on this server (WSGIAPP_API_TOKEN is not set)')


def test_no_token_is_401_with_a_challenge(api):
    response = post(api, b'{}', 401, headers={})
    error(response, 401, 'this request needs an Authorization: Bearer token')
    assert response.headers['WWW-Authenticate'] == 'Bearer realm="wsgiapp"'


def test_a_wrong_token_is_401_and_ten_of_them_are_429(api):
    for _ in range(10):
        response = post(api, b'{}', 401, headers={'Authorization': 'Bearer wrong'})
        error(response, 401, 'the bearer token is not valid')
        assert response.headers['WWW-Authenticate'] == 'Bearer realm="wsgiapp", error="invalid_token"'
    response = post(api, b'{}', 429)  # even the right token, from this address, for a minute
    error(response, 429, 'too many wrong bearer tokens from this address; try again later')
    assert 1 <= int(response.headers['Retry-After']) <= 61


@pytest.mark.parametrize('body, content_type, status, message', [
    (b'{"name": "' + b'x' * 1020 + b'"}', 'application/json', 413, 'the request body is over 1024 bytes'),
    (b'{}', 'text/plain', 415, 'the request body must be application/json'),
    (b'{}', 'application/json; charset=latin-1', 415, 'the request body must be encoded as utf-8'),
    (b'{', 'application/json', 400, 'the request body is not valid JSON'),
    (b'\xff', 'application/json', 400, 'the request body is not valid UTF-8'),
    (b'[]', 'application/json', 400, 'the request body must be a JSON object'),
    (b'{"name": "a"}', 'application/json', 422, 'email is required'),
    (b'{"name": "a", "email": "a@b", "x": 1}', 'application/json', 422,
     'x is not a known field; send name and email only'),
])
def test_what_is_wrong_with_a_body(api, body, content_type, status, message):
    error(post(api, body, status, content_type=content_type), status, message)


def test_a_bad_idempotency_key_is_400(api):
    response = post(api, b'{"name": "a", "email": "a@b"}', 400, headers={**AUTH, 'Idempotency-Key': 'a b'})
    error(response, 400, 'Idempotency-Key must be 1 to 255 printable ASCII characters')


def test_a_request_that_passes_every_check_reaches_the_missing_database(api):
    body = json.dumps({'name': 'Zoë', 'email': 'z@example.com'}).encode()
    for headers in (AUTH, {**AUTH, 'Idempotency-Key': '"k-1"'}):
        response = post(api, body, 503, headers=headers)
        assert response.json['error']['message'].startswith('the database is not configured: DATABASE_URL')
        assert response.headers['Retry-After'] == '30'


@pytest.mark.parametrize('query, status', [
    ('limit=0', 400), ('limit=101', 400), ('limit=x', 400), ('after=-1', 400), ('after=4294967296', 400),
    ('limit=1&limit=2', 400), ('limit=1', 503), ('limit=100', 503), ('after=0', 503), ('after=4294967295', 503),
])
def test_query_parameters_are_checked_before_the_database(api, query, status):
    response = api.get(f'/api/admins?{query}', status=status)
    if status == 400:
        name = query.partition('=')[0]
        assert response.json['error']['message'].startswith(f"query parameter '{name}' ")


def test_an_admins_page_with_a_bad_query_is_an_html_400(api):
    response = api.get('/admins?limit=1000', status=400)
    assert response.headers['Content-Type'] == 'text/html; charset=utf-8'
    assert "<p>query parameter &#x27;limit&#x27; must be a decimal integer from 1 to 100</p>" in response.text


def test_the_benchmarks_header_control_carries_the_headers_of_slash(api):
    """bench/peers/ceiling_headers.py measures what carrying `/`'s headers costs uwsgi and
    nginx: it must send the very names the app sends there, or it measures something else."""
    from bench.peers.ceiling_headers import HEADERS
    sent = [name for name, _ in api.get('/').headerlist]
    assert sorted(name for name, _ in HEADERS) == sorted(sent)


@pytest.mark.parametrize('path', ['/', '/%E5%BC%A0%E4%B8%89', '/admins?limit=0'])
@pytest.mark.parametrize('private', [{}, {'X-Consistency-Token': 'bench'}, {'Cookie': 'a=1; wsgiapp_consistency=x'}])
def test_the_benchmarks_falcon_peer_with_headers_gives_the_apps_answer(api, path, private):
    """bench/peers/falcon_headers.py is Falcon judged on wsgiapp's answer: the same header
    names, and the same values but for those made per request, public or private, 200 or 400."""
    from bench.peers.falcon_headers import application
    made_per_request = {'date', 'x-request-id'}
    ours = api.get(path, headers=private, expect_errors=True)
    theirs = webtest.TestApp(application).get(path, headers=private, expect_errors=True)
    if ours.status_int == 400:  # each says why in its own words: the names alone must match
        assert theirs.status_int == 400
        made_per_request |= {'content-length', 'content-type', 'etag', 'content-security-policy'}
    else:
        assert theirs.body == ours.body
    assert sorted((name.lower(), value) for name, value in theirs.headerlist if name.lower() not in made_per_request) \
        == sorted((name.lower(), value) for name, value in ours.headerlist if name.lower() not in made_per_request)


def test_the_benchmarks_falcon_peer_with_headers_answers_304_as_the_app_does(api):
    from bench.peers.falcon_headers import application
    answers = []
    for client in (api, webtest.TestApp(application)):
        etag = client.get('/').headers['ETag']
        answer = client.get('/', headers={'If-None-Match': etag}, status=304)
        assert answer.body == b''
        answers.append(sorted((name.lower(), value) for name, value in answer.headerlist
                              if name.lower() not in {'date', 'x-request-id'}))
    assert answers[0] == answers[1]
