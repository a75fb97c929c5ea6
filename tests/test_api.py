"""The JSON API and the admins page, through WebTest, on a real MariaDB."""
import io
import json
from datetime import datetime, timedelta, timezone

import pytest
import webtest

from tests.helpers.servers import TOKEN

SQL_INJECTION = "Robert'); DROP TABLE vc_admin;--"
MARKUP = '<script>alert("x")</script>&amp;'


def post(app, body, headers=None, status=201, content_type='application/json'):
    data = body if isinstance(body, bytes) else json.dumps(body).encode('utf-8')
    headers = {'Authorization': f'Bearer {TOKEN}', **(headers or {})}
    return app.post('/api/admins', data, headers=headers, content_type=content_type,
                    status=status, expect_errors=status >= 400)


def patch(app, admin_id, body, status=200, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode('utf-8')
    headers = {'Authorization': f'Bearer {TOKEN}', **(headers or {})}
    return app.patch(f'/api/admins/{admin_id}', data, headers=headers,
                     content_type='application/json', status=status, expect_errors=status >= 400)


def error_of(response, status):
    assert response.status_int == status
    assert response.headers['Content-Type'] == 'application/json'
    assert response.json['error']['status'] == status
    return response.json['error']['message']


# Listing

def test_empty_listing(app):
    assert app.get('/api/admins').json == {'items': [], 'next': None}


def test_listing_pages_by_id_with_a_next_link_until_the_last_page(app, add):
    ids = [add(f'admin{n}') for n in range(12)]
    first = app.get('/api/admins').json
    assert [item['id'] for item in first['items']] == ids[:10]  # the seed's limit 10
    assert first['next'] == f'/api/admins?after={ids[9]}&limit=10'
    second = app.get(first['next']).json
    assert [item['id'] for item in second['items']] == ids[10:]
    assert second['next'] is None


def test_next_is_null_exactly_when_the_page_is_the_last(app, add):
    ids = [add(f'a{n}') for n in range(4)]
    assert app.get('/api/admins?limit=4').json['next'] is None
    assert app.get('/api/admins?limit=3').json['next'] == f'/api/admins?after={ids[2]}&limit=3'
    assert app.get('/api/admins?limit=2&after=2').json['next'] is None


def test_after_is_a_keyset_cursor_not_an_offset(app, add, sql):
    ids = [add(f'k{n}') for n in range(5)]
    sql('DELETE FROM vc_admin WHERE id = %s', (ids[1],))
    items = app.get(f'/api/admins?after={ids[0]}&limit=2').json['items']
    assert [item['id'] for item in items] == [ids[2], ids[3]]


def test_item_shape_and_utc_timestamp(app, add):
    admin_id = add('张三', 'zhang@example.cn')
    item = app.get(f'/api/admins/{admin_id}').json
    assert set(item) == {'id', 'name', 'email', 'created_at'}
    assert (item['id'], item['name'], item['email']) == (admin_id, '张三', 'zhang@example.cn')
    created = datetime.fromisoformat(item['created_at'])
    assert item['created_at'].endswith('+00:00')
    assert abs(created - datetime.now(timezone.utc)) < timedelta(minutes=5)


@pytest.mark.parametrize('query', [
    'limit=abc', 'limit=0', 'limit=101', 'limit=-1', 'limit=1.5', 'limit=+5', 'limit=%205',
    'limit=%EF%BC%95', 'limit=', 'limit=10&limit=10', 'limit=1e2', 'limit=0x10',
    'after=-1', 'after=4294967296', 'after=1&after=2', 'after=99999999999999999999999', 'after=1_0',
])
def test_bad_query_parameters_are_400(app, query):
    message = error_of(app.get(f'/api/admins?{query}', status=400), 400)
    assert query.split('=')[0] in message


def test_query_parameter_edges_and_unknown_ones(app, add):
    add('only')
    assert len(app.get('/api/admins?limit=1&after=0&sort=desc&x').json['items']) == 1
    assert app.get('/api/admins?limit=100&after=4294967295').json == {'items': [], 'next': None}
    assert app.get('/api/admins?limit=007').status_int == 200


def test_get_absent_item_is_404(app):
    assert 'does not exist' in error_of(app.get('/api/admins/42', status=404), 404)
    error_of(app.get('/api/admins/0', status=404), 404)
    error_of(app.get('/api/admins/9999999999', status=404), 404)
    error_of(app.get('/api/admins/abc', status=404), 404)


def test_head_on_the_api(app, add):
    admin_id = add('h')
    head = app.head(f'/api/admins/{admin_id}')
    assert head.body == b''
    assert head.headers['Content-Length'] == app.get(f'/api/admins/{admin_id}').headers['Content-Length']


# The admins page

def test_admins_page_escapes_data_and_links_to_the_next_page(app, add):
    add(MARKUP)
    add('张三')
    page = app.get('/admins?limit=1')
    assert page.headers['Content-Type'] == 'text/html; charset=utf-8'
    assert '<script>' not in page.text
    assert '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;amp;' in page.text
    assert '<a rel="next" href="/admins?after=1&amp;limit=1">' in page.text
    last = app.get('/admins?after=1&limit=1')
    assert '张三' in last.text and 'rel="next"' not in last.text


def test_admins_page_defaults_to_ten_rows(app, add):
    for n in range(11):
        add(f'row-{n:02}')
    page = app.get('/admins')
    assert page.text.count('<tr><td>') == 10
    assert 'row-09' in page.text and 'row-10' not in page.text


def test_admins_page_bad_parameter_is_an_html_400(app):
    page = app.get('/admins?limit=1000', status=400)
    assert page.headers['Content-Type'] == 'text/html; charset=utf-8'
    assert 'limit' in page.text


# Writes

@pytest.mark.parametrize('name', ['alice', '张三', 'Zoë 🚀', SQL_INJECTION, MARKUP, 'x' * 64, "a\"b\\c%_"])
def test_create_round_trips_any_name(app, sql, name):
    response = post(app, {'name': name, 'email': 'a@b.c'})
    item = response.json
    assert item['name'] == name
    assert response.headers['Location'] == f'/api/admins/{item["id"]}'
    assert app.get(response.headers['Location']).json == item
    assert sql('SELECT name FROM vc_admin WHERE id = %s', (item['id'],)) == ((name,),)


def test_writes_are_visible_to_the_next_read_on_every_pooled_connection(app):
    # Several reads first, so the pool holds connections that might keep an old snapshot.
    for _ in range(3):
        app.get('/api/admins')
    created = post(app, {'name': 'fresh', 'email': 'f@x.y'}).json
    for _ in range(5):
        assert [item['name'] for item in app.get('/api/admins').json['items']] == ['fresh']
    patch(app, created['id'], {'email': 'new@x.y'})
    assert app.get(f'/api/admins/{created["id"]}').json['email'] == 'new@x.y'


def test_duplicate_name_is_409_and_nothing_changes(app, add, sql):
    add('taken')
    message = error_of(post(app, {'name': 'taken', 'email': 'x@y.z'}, status=409), 409)
    assert 'exists' in message
    assert sql('SELECT COUNT(*) FROM vc_admin') == ((1,),)


def test_names_are_unique_byte_for_byte(app):
    post(app, {'name': 'Alice', 'email': 'a@x.y'})
    post(app, {'name': 'alice', 'email': 'a@x.y'})
    post(app, {'name': '😀', 'email': 'a@x.y'})
    post(app, {'name': '😁', 'email': 'a@x.y'})


def test_patch_changes_only_what_is_sent(app, add):
    admin_id = add('before', 'old@example.com')
    item = patch(app, admin_id, {'name': 'after'}).json
    assert (item['name'], item['email']) == ('after', 'old@example.com')
    item = patch(app, admin_id, {'email': 'new@example.com'}).json
    assert (item['name'], item['email']) == ('after', 'new@example.com')
    assert app.get(f'/api/admins/{admin_id}').json == item


def test_patch_absent_is_404_and_patch_to_a_taken_name_is_409(app, add):
    add('one')
    two = add('two')
    error_of(patch(app, 999, {'name': 'x'}, status=404), 404)
    error_of(patch(app, two, {'name': 'one'}, status=409), 409)
    assert app.get(f'/api/admins/{two}').json['name'] == 'two'


def test_delete_is_204_without_body_headers_then_404(app, add, sql):
    admin_id = add('gone')
    response = app.delete(f'/api/admins/{admin_id}', headers={'Authorization': f'Bearer {TOKEN}'})
    assert response.status_int == 204 and response.body == b''
    assert 'Content-Type' not in response.headers and 'Content-Length' not in response.headers
    assert sql('SELECT COUNT(*) FROM vc_admin') == ((0,),)
    error_of(app.delete(f'/api/admins/{admin_id}', headers={'Authorization': f'Bearer {TOKEN}'},
                        status=404), 404)


# Authorization

@pytest.mark.parametrize('header', [None, '', 'Bearer', 'Bearer ', 'Basic czNjcmV0LXRva2Vu',
                                    f'Bearer {TOKEN}x', f'Bearer {TOKEN[:-1]}', 'Bearer wrong'])
def test_missing_or_wrong_token_is_401_on_every_write(app, add, sql, header):
    admin_id = add('kept')
    headers = {} if header is None else {'Authorization': header}
    body = json.dumps({'name': 'n', 'email': 'e@x.y'}).encode()
    for method, path in [('POST', '/api/admins'), ('PATCH', f'/api/admins/{admin_id}'),
                         ('DELETE', f'/api/admins/{admin_id}')]:
        response = app.request(path, method=method, headers=headers, body=body,
                               content_type='application/json', expect_errors=True)
        error_of(response, 401)
        assert response.headers['WWW-Authenticate'].startswith('Bearer')
    assert sql('SELECT name FROM vc_admin') == (('kept',),)


def test_scheme_is_case_insensitive(app):
    post(app, {'name': 'n', 'email': 'e@x.y'}, headers={'Authorization': f'bearer {TOKEN}'})


def test_writes_disabled_without_a_token_is_403(make_app, sql):
    app = make_app(api_token=None)
    response = post(app, {'name': 'n', 'email': 'e@x.y'}, status=403)
    assert 'WSGIAPP_API_TOKEN' in error_of(response, 403)
    assert sql('SELECT COUNT(*) FROM vc_admin') == ((0,),)


# Bodies

@pytest.mark.parametrize('body, status, words', [
    (b'{"name": "x", "email": ', 400, 'JSON'),
    (b'\xff\xfe{}', 400, 'UTF-8'),
    (b'[]', 400, 'object'),
    (b'"text"', 400, 'object'),
    (b'', 400, 'JSON'),
    (b'{"name": NaN, "email": "a@b"}', 400, 'JSON'),
    (b'[' * 50000 + b']' * 50000, 413, 'bytes'),
    (b'[' * 30000 + b']' * 30000, 400, 'JSON'),
    (b'{"email": "a@b.c"}', 422, 'name'),
    (b'{"name": "x"}', 422, 'email'),
    (b'{"name": 5, "email": "a@b.c"}', 422, 'name'),
    (b'{"name": null, "email": "a@b.c"}', 422, 'name'),
    (b'{"name": "", "email": "a@b.c"}', 422, 'name'),
    (b'{"name": " padded", "email": "a@b.c"}', 422, 'name'),
    (b'{"name": "tab\\there", "email": "a@b.c"}', 422, 'name'),
    (b'{"name": "\\ud800", "email": "a@b.c"}', 422, 'name'),
    (json.dumps({'name': 'x' * 65, 'email': 'a@b.c'}).encode(), 422, 'name'),
    (b'{"name": "x", "email": "no-at-sign"}', 422, 'email'),
    (b'{"name": "x", "email": "@b.c"}', 422, 'email'),
    (b'{"name": "x", "email": "a@"}', 422, 'email'),
    (b'{"name": "x", "email": "a b@c.d"}', 422, 'email'),
    (json.dumps({'name': 'x', 'email': 'a@' + 'b' * 253}).encode(), 422, 'email'),
    (b'{"name": "x", "email": "a@b.c", "admin": true}', 422, 'admin'),
])
def test_bad_bodies_get_a_clear_4xx_and_write_nothing(app, sql, body, status, words):
    assert words in error_of(post(app, body, status=status), status)
    assert sql('SELECT COUNT(*) FROM vc_admin') == ((0,),)


def test_longest_email_is_accepted(app):
    post(app, {'name': 'x', 'email': 'a@' + 'b' * 252})


def test_patch_body_rules(app, add):
    admin_id = add('p')
    assert 'name or email' in error_of(patch(app, admin_id, {}, status=422), 422)
    assert 'id' in error_of(patch(app, admin_id, {'id': 7}, status=422), 422)


@pytest.mark.parametrize('content_type', ['text/plain', 'application/x-www-form-urlencoded',
                                          'application/json; charset=latin-1', 'application/jsonx'])
def test_body_that_is_not_json_is_415(app, content_type):
    error_of(post(app, b'{"name": "x", "email": "a@b.c"}', status=415, content_type=content_type), 415)


def test_json_content_type_with_utf8_charset_is_accepted(app):
    post(app, b'{"name": "x", "email": "a@b.c"}', content_type='application/json; charset=UTF-8')


class CountingInput(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.consumed = 0

    def read(self, size=-1):
        chunk = super().read(size)
        self.consumed += len(chunk)
        return chunk


def raw_post(app, data, length, token=TOKEN):
    stream = CountingInput(data)
    environ = {'REQUEST_METHOD': 'POST', 'PATH_INFO': '/api/admins', 'CONTENT_TYPE': 'application/json',
               'CONTENT_LENGTH': str(length), 'HTTP_AUTHORIZATION': f'Bearer {token}', 'wsgi.input': stream}
    request = webtest.TestRequest.blank('/api/admins', environ)
    request.environ['wsgi.input'] = stream  # as given: exactly what the server would hand over
    response = request.get_response(app.app)
    return response, stream


def test_body_is_read_up_to_content_length_and_never_past_it(app, sql):
    body = b'{"name": "exact", "email": "a@b.c"}'
    response, stream = raw_post(app, body + b'GARBAGE-NEXT-REQUEST', len(body))
    assert response.status_int == 201
    assert stream.consumed == len(body)


def test_oversized_body_is_413_before_anything_is_read(app, sql):
    response, stream = raw_post(app, b'{}' * 10, 10 ** 9)
    assert response.status_int == 413 and stream.consumed == 0


def test_body_shorter_than_content_length_is_400(app, sql):
    response, stream = raw_post(app, b'{"name": "x"', 100)
    assert response.status_int == 400
    assert 'shorter' in response.json['error']['message']
    assert sql('SELECT COUNT(*) FROM vc_admin') == ((0,),)


def test_body_limit_follows_the_setting(make_app, sql):
    app = make_app(max_body=1024)
    body = {'name': 'x', 'email': 'a@b.c', 'pad': 'y' * 1100}
    error_of(post(app, body, status=413), 413)


# Which error wins: 405, 403, 401, 413, 415, 400, 422, 404, 409

def test_error_precedence(make_app, app, add):
    taken = add('taken')
    big = b'x' * 70000
    no_writes = make_app(api_token=None)
    error_of(no_writes.put('/api/admins', big, status=405), 405)
    error_of(post(no_writes, big, status=403, headers={'Authorization': ''}), 403)
    error_of(post(app, big, status=401, headers={'Authorization': 'Bearer nope'}), 401)
    error_of(post(app, big, status=413, content_type='text/plain'), 413)
    error_of(post(app, b'{bad json', status=415, content_type='text/plain'), 415)
    error_of(post(app, b'{bad json, "unknown": 1', status=400), 400)
    error_of(patch(app, 999999, {'name': ''}, status=422), 422)
    error_of(patch(app, 999999, {'name': 'taken'}, status=404), 404)
    error_of(patch(app, taken + 1, {'name': 'taken'}, status=404), 404)
    error_of(post(app, {'name': 'taken', 'email': 'a@b.c'}, status=409), 409)


# Characters that make a name display as something else

INVISIBLE = {
    '\u202e': 'RIGHT-TO-LEFT OVERRIDE', '\u202a': 'LEFT-TO-RIGHT EMBEDDING', '\u2066': 'LEFT-TO-RIGHT ISOLATE',
    '\u2067': 'RIGHT-TO-LEFT ISOLATE', '\u2068': 'FIRST STRONG ISOLATE', '\u2069': 'POP DIRECTIONAL ISOLATE',
    '\u200e': 'LEFT-TO-RIGHT MARK', '\u200b': 'ZERO WIDTH SPACE', '\ufeff': 'ZERO WIDTH NO-BREAK SPACE',
    '\u00ad': 'SOFT HYPHEN', '\U000e0041': 'TAG LATIN CAPITAL LETTER A', '\u2028': 'LINE SEPARATOR',
    '\u2029': 'PARAGRAPH SEPARATOR', '\x7f': 'DELETE', '\x85': 'NEXT LINE', '\x00': 'NULL',
}


@pytest.mark.parametrize('char', INVISIBLE, ids=INVISIBLE.values())
@pytest.mark.parametrize('field', ['name', 'email'])
def test_invisible_and_bidirectional_characters_are_422_on_create(app, sql, field, char):
    body = {'name': 'admin', 'email': 'a@example.com'}
    body[field] = {'name': f'adm{char}in', 'email': f'a{char}@example.com'}[field]
    message = error_of(post(app, body, status=422), 422)
    assert message.startswith(field) and 'format characters' in message
    assert sql('SELECT COUNT(*) FROM vc_admin') == ((0,),)


@pytest.mark.parametrize('char', INVISIBLE, ids=INVISIBLE.values())
@pytest.mark.parametrize('field', ['name', 'email'])
def test_invisible_and_bidirectional_characters_are_422_on_patch(app, add, sql, field, char):
    admin_id = add('kept', 'kept@example.com')
    value = {'name': f'evil{char}gpj.exe', 'email': f'kept{char}@example.com'}[field]
    message = error_of(patch(app, admin_id, {field: value}, status=422), 422)
    assert message.startswith(field)
    assert sql('SELECT name, email FROM vc_admin') == (('kept', 'kept@example.com'),)


@pytest.mark.parametrize('name', ['حسین\u200cزاده', '\U0001f469\u200d\U0001f4bb', 'שלום', 'مرحبا', 'a\u00a0b'])
def test_joiners_and_right_to_left_scripts_are_accepted(app, name):
    assert post(app, {'name': name, 'email': 'a@b.c'}).json['name'] == name


def test_wrong_tokens_are_limited_per_address_and_valid_writers_elsewhere_are_not(app, sql):
    body = {'name': 'guess', 'email': 'g@example.com'}
    attacker, writer = {'REMOTE_ADDR': '192.0.2.7'}, {'REMOTE_ADDR': '198.51.100.8'}
    for n in range(10):
        app.post_json('/api/admins', body, headers={'Authorization': f'Bearer guess{n}'},
                      extra_environ=attacker, status=401)
    refused = app.post_json('/api/admins', body, headers={'Authorization': 'Bearer guess10'},
                            extra_environ=attacker, status=429)
    assert 1 <= int(refused.headers['Retry-After']) <= 60 and refused.json['error']['status'] == 429
    # While it lasts, not even the right token gets through from there: guessing has stopped.
    app.post_json('/api/admins', body, headers={'Authorization': f'Bearer {TOKEN}'}, extra_environ=attacker,
                  status=429)
    assert sql('SELECT COUNT(*) FROM vc_admin') == ((0,),)
    for n in range(20):  # another address writing with the right token is never slowed
        app.post_json('/api/admins', {'name': f'w{n}', 'email': 'w@example.com'},
                      headers={'Authorization': f'Bearer {TOKEN}'}, extra_environ=writer, status=201)
    app.post_json('/api/admins', body, headers={'Authorization': 'Bearer wrong'}, extra_environ=writer, status=401)


def test_the_failure_window_ends():
    import time

    from wsgiapp.failed_tokens import FailedTokens
    from wsgiapp.http import TooManyRequests
    failures = FailedTokens(limit=2, window=0.3, size=2)
    failures.add('a')
    failures.check('a')
    failures.add('a')
    with pytest.raises(TooManyRequests):
        failures.check('a')
    failures.add('b')
    failures.add('c')  # over `size`: the oldest address, a, is forgotten
    failures.check('a')
    failures.add('b')
    with pytest.raises(TooManyRequests):
        failures.check('b')
    time.sleep(0.35)
    failures.check('b')
