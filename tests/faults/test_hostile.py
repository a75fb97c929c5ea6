"""Hostile input: generated requests through WebTest (10,000 under `make faults`), then the
real stack under sqlmap and schemathesis. Every answer is a documented 4xx or a success;
nothing a client sends produces a 500, and markup never comes back unescaped."""
import json
import os
import re
import shutil
import subprocess
from html import escape
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.load import report
from tests.helpers.servers import TOKEN
from tests.helpers.web import call
from wsgiapp.routing import RESERVED

pytestmark = [pytest.mark.faults, pytest.mark.mariadb]  # and a stack (nginx, uwsgi) for those that take one
EXAMPLES = int(os.environ.get('WSGIAPP_FUZZ_EXAMPLES', '1000'))
DOCUMENTED = {200, 201, 204, 400, 401, 403, 404, 405, 409, 413, 415, 422, 429}
SEEN = []

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
fields = st.fixed_dictionaries({}, optional={
    'name': st.text(max_size=70) | json_values, 'email': st.text(max_size=260) | json_values,
    'id': st.integers(), 'extra': json_values})
bodies = (fields.map(lambda d: json.dumps(d).encode()) | json_values.map(lambda v: json.dumps(v).encode())
          | st.binary(max_size=300) | st.just(b"{\"name\": \"x'; DROP TABLE vc_admin;--\", \"email\": \"a@b\"}"))
paths = st.one_of(
    st.sampled_from(['/', '/admins', '/api/admins', '/api/admins/1', '/api/admins/0', '/healthz',
                     '/readyz', '/openapi.json', '/api', '/static/x', '/favicon.ico', '//', '/api/admins/']),
    st.text(max_size=30).map(lambda s: '/' + quote(s, safe='/')),
    st.binary(max_size=12).map(lambda b: '/' + ''.join(f'%{x:02X}' for x in b)),
    st.integers(-10, 10 ** 12).map(lambda n: f'/api/admins/{n}'),
    st.sampled_from(['%C0%AF', '%E0%80%AF', '%F0%80%80%AF', '%ED%A0%80', '%FF%FE', '%C0%AE%C0%AE'])
    .map(lambda s: '/' + s),
)
parameter_values = (st.integers(-10 ** 12, 10 ** 12).map(str) | st.text(max_size=12)
                    | st.sampled_from(['', '1e3', '0x10', '+1', ' 1', '1 OR 1=1', "1'--", '1;SELECT 1', '９']))
queries = st.lists(st.tuples(st.sampled_from(['limit', 'after', 'x']) | st.text(max_size=5), parameter_values),
                   max_size=4).map(urlencode)
headers = st.fixed_dictionaries({}, optional={
    'Content-Type': st.sampled_from(['application/json', 'application/json; charset=utf-8', 'text/plain',
                                     'application/json; charset=latin-1', 'multipart/form-data', '']),
    'Authorization': st.sampled_from([f'Bearer {TOKEN}', 'Bearer wrong', 'Basic abc', 'Bearer', '']),
    'X-Request-ID': st.text(max_size=40).map(lambda s: s.encode('utf-8').decode('latin-1')),
    'Cookie': st.text(max_size=50).map(lambda s: s.encode('utf-8').decode('latin-1')),
})
methods = st.sampled_from(['GET', 'HEAD', 'POST', 'PATCH', 'DELETE', 'PUT', 'OPTIONS'])


@settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(method=methods, path=paths, query=queries, body=bodies, extra=headers)
def test_generated_requests_never_500(app, method, path, query, body, extra):
    response = app.request(path + ('?' + query if query else ''), method=method, headers=extra,
                           body=body if method in ('POST', 'PATCH', 'PUT') else b'', expect_errors=True)
    SEEN.append(response.status_int)
    assert response.status_int in DOCUMENTED, (method, path, query, body[:100], response.text[:300])
    if response.status_int != 204 and method != 'HEAD':
        assert int(response.headers['Content-Length']) == len(response.body)
    if response.content_type == 'text/html':
        assert not re.search(r'<(script|img|svg|iframe)', response.text.split('</h1>', 1)[-1] + response.text)


@settings(max_examples=EXAMPLES // 4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=1, max_size=40).filter(lambda s: '/' not in s and s not in RESERVED))
def test_any_name_comes_back_escaped(app, name):
    response = app.get('/' + quote(name, safe=''), expect_errors=True)
    if response.status_int == 200:
        assert f'<h1>hello, {escape(name)}</h1>' in response.text
    else:  # a name the path cannot carry, such as '.' or '..'
        assert response.status_int == 404


def test_report_generated_requests():
    if not SEEN:
        pytest.skip('the generated requests did not run in this session: nothing to report')
    report(f'7. {len(SEEN)} generated requests through WebTest', SEEN)
    assert all(status < 500 for status in SEEN)


@pytest.mark.parametrize('path', ['/static/..%2f..%2fwsgiapp%2fdb.py', '/static/%2e%2e/%2e%2e/wsgiapp/db.py',
                                  '/static/..%252f..%252fwsgiapp/db.py', '/static/....//wsgiapp/db.py',
                                  '/static/%c0%ae%c0%ae/wsgiapp/db.py', '/static/../../etc/passwd'])
def test_static_never_leaves_its_directory(stack, path):
    status, _, body = call(stack, 'GET', path)
    assert status in (400, 404)
    assert b'import MySQLdb' not in body and b'root:' not in body


@pytest.mark.slow
def test_sqlmap_finds_nothing(stack, tmp_path):
    sqlmap = shutil.which('sqlmap')
    if sqlmap is None:
        pytest.fail('sqlmap is not installed: make faults installs it (Debian package sqlmap)')
    base = stack.url
    common = [sqlmap, '--batch', '--level=2', '--risk=1', f'--output-dir={tmp_path}', '--disable-coloring',
              '--flush-session', '--technique=BEUST', '--timeout=10']
    runs = [
        [*common, '-u', f'{base}/api/admins?limit=1&after=0', '-p', 'limit,after'],
        [*common, '-u', f'{base}/api/admins', '--method=POST', '--data', '{"name":"sq*","email":"e@x.y*"}',
         '-H', f'Authorization: Bearer {stack.token()}', '-H', 'Content-Type: application/json'],
    ]
    for command in runs:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert 'identified the following injection point' not in done.stdout, done.stdout[-3000:]
        assert 'all tested parameters do not appear to be injectable' in done.stdout, done.stdout[-3000:]
    report('7b. sqlmap on limit, after, name and email', [], result='no injectable parameter')


@pytest.mark.slow
def test_schemathesis_agrees_with_openapi(stack):
    schemathesis = shutil.which('schemathesis') or os.path.join(os.path.dirname(os.sys.executable), 'schemathesis')
    if not os.path.exists(schemathesis):
        pytest.fail('schemathesis is not installed: make faults installs it')
    done = subprocess.run(
        [schemathesis, '--config-file', os.path.join(os.path.dirname(__file__), 'schemathesis.toml'),
         'run', f'{stack.url}/openapi.json', '--checks', 'all', '--exclude-checks', 'ensure_resource_availability',
         '--tls-verify', str(stack.ca),
         '-H', f'Authorization: Bearer {stack.token()}', '--max-examples', '40', '--no-color'],
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    cases = re.search(r'(\d+) generated', done.stdout)
    report('8. schemathesis, all checks', [], result=f'{cases.group(1) if cases else "?"} test cases passed')
