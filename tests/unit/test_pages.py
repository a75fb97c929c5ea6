"""The HTML routes, routing, and what every response carries; no database needed."""
import shutil
from html import escape
from urllib.parse import quote
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest
import webtest

from wsgiapp import config, pages
from wsgiapp.app import Application
from wsgiapp.routing import RESERVED
from wsgiapp.version import PACKAGE, VERSION, code_version


@pytest.fixture
def bare():
    """The app with no DATABASE_URL at all: it must still import and serve what needs no database."""
    return webtest.TestApp(Application(config.from_environ({})), lint=True)


def test_root_says_hello_world_as_utf8_html(bare):
    response = bare.get('/')
    assert response.status_int == 200
    assert response.headers['Content-Type'] == 'text/html; charset=utf-8'
    assert '<h1>hello world</h1>' in response.text
    assert int(response.headers['Content-Length']) == len(response.body)


@pytest.mark.parametrize('name', ['fulin', '张三', 'Zoë 🚀', 'a b', "o'neil"])
def test_name_is_decoded_as_utf8_from_the_latin1_path(bare, name):
    response = bare.get('/' + quote(name))
    assert response.status_int == 200
    assert response.text.count('<h1>hello, ') == 1
    assert f'<h1>hello, {escape(name)}</h1>' in response.text


def test_name_markup_is_escaped_not_executed(bare):
    response = bare.get('/' + quote('<script>alert(1)'))
    assert '<script>' not in response.text
    assert '<h1>hello, &lt;script&gt;alert(1)</h1>' in response.text
    response = bare.get('/' + quote('"><img src=x onerror=alert(1)>'))
    assert '<img' not in response.text
    assert '&quot;&gt;&lt;img' in response.text


@pytest.mark.parametrize('raw', ['%FF', '%C3%28', '%ED%A0%80', '%C0%AF', 'caf%E9'])
def test_a_path_that_is_not_utf8_is_400(bare, raw):
    response = bare.get('/' + raw, status=400)
    assert response.headers['Content-Type'] == 'text/html; charset=utf-8'
    assert 'UTF-8' in response.text


@pytest.mark.parametrize('word', [w for w in RESERVED if w not in ('admins', 'healthz', 'readyz', 'openapi.json')])
def test_reserved_words_are_never_names(bare, word):
    response = bare.get('/' + word, status=404)
    assert 'hello,' not in response.text


@pytest.mark.parametrize('path', ['/a/b', '/name/', '/static/style.css', '/api/nothing', '//'])
def test_unknown_paths_are_404(bare, path):
    response = bare.get(path, status=404)
    expected = 'application/json' if path.startswith('/api/') else 'text/html; charset=utf-8'
    assert response.headers['Content-Type'] == expected


def test_markup_in_a_404_path_is_escaped(bare):
    response = bare.get('/' + quote('<script>x</script>'), status=404)
    assert '<script>' not in response.text
    assert '&lt;script&gt;x&lt;/script&gt;' in response.text


def test_api_404_is_json_error_shape(bare):
    response = bare.get('/api/nothing', status=404)
    assert response.json == {'error': {'status': 404, 'message': 'nothing is at /api/nothing'}}


@pytest.mark.parametrize('method, path, allow', [
    ('POST', '/', 'GET, HEAD'),
    ('DELETE', '/someone', 'GET, HEAD'),
    ('PUT', '/admins', 'GET, HEAD'),
    ('PUT', '/api/admins', 'GET, HEAD, POST'),
    ('POST', '/api/admins/1', 'DELETE, GET, HEAD, PATCH'),
    ('POST', '/healthz', 'GET, HEAD'),
    ('OPTIONS', '/openapi.json', 'GET, HEAD'),
])
def test_wrong_method_is_405_with_allow(bare, method, path, allow):
    response = bare.request(path, method=method, status=405, expect_errors=True)
    assert response.headers['Allow'] == allow


def test_head_has_get_headers_and_no_body(bare):
    get = bare.get('/' + quote('张三'))
    head = bare.head('/' + quote('张三'))
    assert head.status_int == 200 and head.body == b''
    assert head.headers['Content-Length'] == get.headers['Content-Length']
    assert head.headers['Content-Type'] == get.headers['Content-Type']


def test_security_headers_on_every_response(bare):
    for path, status in [('/', 200), ('/nope/nope', 404), ('/healthz', 200), ('/api/x', 404)]:
        response = bare.get(path, status=status)
        assert response.headers['X-Content-Type-Options'] == 'nosniff'
        assert response.headers['X-Request-ID']
    html_page = bare.get('/')
    assert "default-src 'none'" in html_page.headers['Content-Security-Policy']
    assert "style-src 'self'" in html_page.headers['Content-Security-Policy']
    assert 'Content-Security-Policy' not in bare.get('/healthz').headers


def test_request_id_is_taken_from_nginx_or_generated(bare):
    assert bare.get('/', headers={'X-Request-ID': 'abc123'}).headers['X-Request-ID'] == 'abc123'
    generated = {bare.get('/').headers['X-Request-ID'] for _ in range(3)}
    assert len(generated) == 3
    # Something that could forge a log line or a header is replaced, not echoed.
    hostile = bare.get('/', headers={'X-Request-ID': 'a b<script>'}).headers['X-Request-ID']
    assert hostile != 'a b<script>' and len(hostile) == 32


def test_healthz_needs_no_database(bare):
    response = bare.get('/healthz')
    assert response.headers['Content-Type'] == 'text/plain; charset=utf-8'
    assert response.text == f'ok version={VERSION}\n'


def test_every_answer_says_which_code_made_it(bare, tmp_path):
    for path in ('/', '/healthz', '/nope/nope'):
        assert bare.get(path, status='*').headers['X-App-Version'] == VERSION
    # The version follows the source: another file, or another byte in one, is another version.
    copy = tmp_path / 'wsgiapp'
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns('__pycache__'))
    assert code_version(copy) == VERSION
    (copy / 'pages.py').write_text((copy / 'pages.py').read_text() + '# changed\n')
    assert code_version(copy) != VERSION


@pytest.mark.parametrize('path', ['/admins', '/api/admins', '/api/admins/1', '/readyz'])
def test_database_routes_say_which_variable_is_missing(bare, path):
    response = bare.get(path, status=503)
    assert 'DATABASE_URL' in response.text
    assert response.headers['Retry-After']


def test_malformed_database_url_is_503_without_the_password():
    app = webtest.TestApp(Application(config.from_environ(
        {'DATABASE_URL': 'postgres://user:hunter2@db/x'})))
    response = app.get('/api/admins', status=503)
    assert 'DATABASE_URL' in response.text
    assert 'hunter2' not in response.text


def test_pep3333_conformance_under_wsgiref_validator():
    """wsgiref's validator is stricter than WebTest's lint (no Content-Type on a 204, for one)."""
    checked = validator(Application(config.from_environ({})))
    for method, path, expected in [('GET', '/', '200'), ('HEAD', '/x', '200'), ('GET', '/a/b', '404'),
                                   ('POST', '/', '405'), ('GET', '/%FF', '400'), ('GET', '/api/admins', '503')]:
        environ = {'REQUEST_METHOD': method, 'PATH_INFO': path.replace('%FF', '\xff'),
                   'SCRIPT_NAME': '', 'QUERY_STRING': ''}
        setup_testing_defaults(environ)
        seen = []
        result = checked(environ, lambda status, headers, exc_info=None, seen=seen: seen.append(status))
        body = b''.join(result)
        result.close()
        assert seen[0].startswith(expected), (path, seen)
        assert (body == b'') == (method == 'HEAD')


# The page functions themselves (wsgiapp.pages), markup exactly as sent.

HEAD = ('<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="stylesheet" href="/static/style.css">\n<link rel="icon" href="/favicon.ico">\n')


def document(title, body):
    return f'{HEAD}<title>{title}</title>\n</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n'


def test_a_page_escapes_its_title_not_its_body():
    assert pages.page('a < b & "c"', '<p>x</p>\n') == document('a &lt; b &amp; &quot;c&quot;', '<p>x</p>\n')


def test_hello_world():
    assert pages.HELLO_WORLD_HTML == document(
        'hello world', '<h1>hello world</h1>\n<p><a href="/admins">admins</a></p>\n')


def test_hello_escapes_the_name_in_title_and_heading():
    assert pages.hello("<b>'Zoë'</b>") == document(
        'hello, &lt;b&gt;&#x27;Zoë&#x27;&lt;/b&gt;', '<h1>hello, &lt;b&gt;&#x27;Zoë&#x27;&lt;/b&gt;</h1>\n')


def test_admins_table_with_escaped_cells_and_a_next_link():
    rows = [(1, 'ann', 'ann@example.com', '2024-01-02T03:04:05.123456'),
            (22, '<script>', '"x"@example.com', '2025-12-31 23:59:59')]
    assert pages.admins(rows, '/admins?after=22&limit=2') == document('admins', (
        '<h1>admins</h1>\n<table>\n'
        '<thead><tr><th>id</th><th>name</th><th>email</th><th>created (UTC)</th></tr></thead>\n<tbody>\n'
        '<tr><td>1</td><td>ann</td><td>ann@example.com</td>'
        '<td><time datetime="2024-01-02T03:04:05.123456">2024-01-02 03:04:05</time></td></tr>\n'
        '<tr><td>22</td><td>&lt;script&gt;</td><td>&quot;x&quot;@example.com</td>'
        '<td><time datetime="2025-12-31 23:59:59">2025-12-31 23:59:59</time></td></tr>\n'
        '</tbody>\n</table>\n'
        '<p><a rel="next" href="/admins?after=22&amp;limit=2">next page</a></p>\n'))


def test_admins_without_rows_or_next_page():
    assert pages.admins([], None) == document('admins', '<h1>admins</h1>\n<p>No admins here.</p>\n')
    assert pages.admins([], '') == document('admins', '<h1>admins</h1>\n<p>No admins here.</p>\n')
    one = pages.admins([(5, 'bo', 'b@o', '2024-01-02T03:04:05')], None)
    assert 'rel="next"' not in one and '<td>bo</td>' in one


def test_error_page_escapes_reason_and_message():
    assert pages.error(404, 'Not <Found>', 'nothing is at /<x>') == document(
        '404 Not &lt;Found&gt;', '<h1>404 Not &lt;Found&gt;</h1>\n<p>nothing is at /&lt;x&gt;</p>\n')
