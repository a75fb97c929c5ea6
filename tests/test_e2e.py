"""End to end: real nginx, real uwsgi on a unix socket, the private MariaDB, over HTTPS
with the stack's own certificate trusted. The stack runs in its own directory on free
ports, so it can run beside `make run`."""
import gzip
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from launcher import logs, procs
from launcher.nginx import Nginx
from launcher.process import ROOT, free_port
from launcher.single import Stack
from launcher.wait import wait_for
from tests.helpers.procs import in_process_group
from tests.helpers.servers import new_base
from tests.helpers.web import api, request, settled_requests
from wsgiapp.version import VERSION

pytestmark = [pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]


def test_every_route_of_the_contract_over_http(stack):
    status, headers, body = request(stack, 'GET', '/')
    assert status == 200 and b'<h1>hello world</h1>' in body
    assert headers['Content-Type'] == 'text/html; charset=utf-8'
    status, _, body = request(stack, 'GET', '/' + quote('张三<b>'))
    assert status == 200 and '<h1>hello, 张三&lt;b&gt;</h1>'.encode() in body
    assert request(stack, 'GET', '/%FF')[0] == 400
    status, _, body = request(stack, 'GET', '/admins')
    assert status == 200 and '张三'.encode() in body and b'<table>' in body

    status, headers, page = api(stack, 'GET', '/api/admins?limit=2')
    assert status == 200 and len(page['items']) == 2
    assert page['next'] == f'/api/admins?after={page["items"][1]["id"]}&limit=2'
    status, headers, created = api(stack, 'POST', '/api/admins', {'name': 'e2e 🚀', 'email': 'e2e@example.com'})
    assert status == 201 and headers['Location'] == f'/api/admins/{created["id"]}'
    assert api(stack, 'GET', headers['Location'])[2] == created
    status, _, patched = api(stack, 'PATCH', headers['Location'], {'email': 'new@example.com'})
    assert status == 200 and patched['email'] == 'new@example.com'
    status, headers204, _ = api(stack, 'DELETE', headers['Location'])
    assert status == 204 and 'Content-Type' not in headers204
    assert api(stack, 'GET', headers['Location'])[0] == 404

    assert api(stack, 'POST', '/api/admins', {'name': 'x', 'email': 'x@y.z'}, token=False)[0] == 401
    assert api(stack, 'POST', '/api/admins', {'name': 'x'})[0] == 422
    status, headers, body = request(stack, 'PUT', '/api/admins')
    assert status == 405 and headers['Allow'] == 'GET, HEAD, POST'
    status, headers, body = request(stack, 'TRACE', '/api/admins/1')  # refused by nginx itself
    assert status == 405 and headers['Allow'] == 'DELETE, GET, HEAD, PATCH' and json.loads(body)
    status, _, body = request(stack, 'GET', '/api/nope')
    assert status == 404 and json.loads(body) == {'error': {'status': 404, 'message': 'nothing is at /api/nope'}}
    assert request(stack, 'GET', '/healthz')[2] == f'ok version={VERSION}\n'.encode()
    assert request(stack, 'GET', '/readyz')[0] == 200
    assert json.loads(request(stack, 'GET', '/openapi.json')[2])['openapi'] == '3.1.0'
    status, headers, body = request(stack, 'HEAD', '/admins')
    assert status == 200 and body == b'' and int(headers['Content-Length']) > 0


def test_body_over_the_limit_is_refused_by_nginx_in_the_api_error_shape(stack):
    status, headers, body = request(stack, 'POST', '/api/admins', b'x' * 70000,
                                    {'Content-Type': 'application/json', 'Authorization': f'Bearer {stack.token()}'})
    assert status == 413 and json.loads(body)['error']['status'] == 413


def test_headers_nginx_adds_and_hides(stack):
    status, headers, _ = request(stack, 'GET', '/')
    assert headers['Server'] == 'nginx'  # server_tokens off: no version
    assert len(headers['X-Request-ID']) == 32  # nginx's $request_id, handed to the app
    assert headers['X-Request-ID'] in stack.nginx.access_log.read_text()
    assert "default-src 'none'" in headers['Content-Security-Policy']
    status, headers, body = request(stack, 'GET', '/openapi.json', headers={'Accept-Encoding': 'gzip'})
    assert headers['Content-Encoding'] == 'gzip'
    assert json.loads(gzip.decompress(body))['openapi'] == '3.1.0'


def test_the_access_log_is_one_json_object_per_request_whatever_the_client_sends(stack):
    """escape=json: a quote, a backslash or a newline-like byte in what a client sends stays
    inside its string, and `make logs ID=` finds the request by its id."""
    agent = 'evil" \\ \x01 "status": "200'
    status, headers, _ = request(stack, 'GET', '/no-such-name?x="y"', headers={'User-Agent': agent})
    request_id = headers['X-Request-ID']
    lines = wait_for(lambda: logs.trace(stack.base, request_id), 5, f'{request_id} in the logs')
    [(where, source, line)] = lines
    assert (source, line['status'], line['method'], line['uri']) == ('nginx', str(status), 'GET', '/no-such-name?x="y"')
    assert line['user_agent'] == agent and line['cache'] in ('MISS', 'BYPASS', '')
    assert line['version'] == VERSION and line['upstream'].startswith('unix:')
    # The route's pattern, from the app's X-Route, which nginx keeps from the client.
    assert line['route'] == '/{name}' and 'X-Route' not in headers
    assert all(isinstance(line[key], (int, float)) for key in ('bytes', 'request_time'))


def test_a_several_kilobyte_cookie_is_answered_not_a_502(stack):
    cookie = '; '.join(f'c{n}={"v" * 100}' for n in range(60))  # about 6.3 KB
    assert request(stack, 'GET', '/api/admins', headers={'Cookie': cookie})[0] == 200
    token = 'x' * 7000
    assert request(stack, 'GET', '/', headers={'Authorization': f'Bearer {token}'})[0] == 200


def test_static_files_are_served_by_nginx_not_by_python(stack):
    before = settled_requests(stack)
    for path in ['/static/style.css', '/favicon.ico', '/robots.txt']:
        status, headers, body = request(stack, 'GET', path)
        assert status == 200 and body
        assert 'max-age' in headers['Cache-Control']
    assert request(stack, 'GET', '/static/style.css')[2] == (ROOT / 'conf/static/style.css').read_bytes()
    assert settled_requests(stack) == before
    request(stack, 'GET', '/healthz')
    assert settled_requests(stack, expected=before + 1) == before + 1  # the counter does move for the app
    # nginx resolves ../ before choosing a location: nothing outside static/ is served.
    assert request(stack, 'GET', '/static/../wsgiapp/db.py')[0] == 404


def test_socket_is_not_world_writable(stack):
    mode = stack.uwsgi.socket.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert mode & 0o007 == 0
    assert mode & 0o060 == 0o060  # nginx's group may connect
    if os.geteuid() == 0:
        import grp
        assert grp.getgrgid(stack.uwsgi.socket.stat().st_gid).gr_name == 'www-data'


def test_check_command_passes_on_the_running_stack(stack):
    assert stack.check() == 0


def test_graceful_reload_under_load_fails_no_request(stack):
    statuses, stop = [], threading.Event()
    private = {'Authorization': f'Bearer {stack.token()}'}

    def load():
        while not stop.is_set():  # with a token: past nginx's cache, to uwsgi every time
            statuses.append(request(stack, 'GET', '/api/admins?limit=5', headers=private)[0])
    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    master, log_before = stack.uwsgi.pid(), stack.uwsgi.log.read_text()
    stack.uwsgi.reload()  # SIGHUP, as `systemctl reload` sends
    time.sleep(3)
    stop.set()
    for thread in threads:
        thread.join()
    assert stack.uwsgi.pid() == master  # the master stays; its workers were replaced
    assert 'Gracefully killing worker' in stack.uwsgi.log.read_text()[len(log_before):]  # by this reload
    assert len(statuses) > 50
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}


def test_nginx_page_only_when_uwsgi_is_unreachable(stack):
    assert request(stack, 'GET', '/admins?limit=2')[0] == 200  # now in nginx's cache
    cached = time.monotonic()
    stack.uwsgi.stop()
    try:
        status, headers, body = request(stack, 'GET', '/admins?limit=3')
        assert status == 502 and b'<h1>502 Bad Gateway</h1>' in body and headers['Retry-After']
        assert b'nginx/' not in body
        status, _, body = request(stack, 'GET', '/api/admins?limit=3')
        assert status == 502 and json.loads(body)['error']['status'] == 502
        # What was read in the last minute is still answered, from the cache, past its lifetime.
        time.sleep(max(0.0, cached + 2.5 - time.monotonic()))
        status, headers, body = request(stack, 'GET', '/admins?limit=2')
        assert status == 200 and headers['X-Cache-Status'] == 'STALE' and b'<table>' in body
    finally:
        stack.uwsgi.start(stack.environ())
    stack.wait_ready()
    status, _, body = request(stack, 'GET', '/api/admins/999999')
    assert status == 404 and json.loads(body)['error']['status'] == 404  # the app's own body, untouched


def test_admins_page_renders_in_headless_chromium(stack, tmp_path):
    chromium = shutil.which('chromium')
    if chromium is None:
        pytest.fail('chromium is not installed: make test installs it (Debian package chromium)')
    done = subprocess.run(
        [chromium, '--headless', '--no-sandbox', '--ignore-certificate-errors', '--disable-gpu', '--disable-quic',
         '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         f'--user-data-dir={tmp_path}', '--enable-logging=stderr', '--v=0',
         '--virtual-time-budget=3000', '--dump-dom', f'{stack.url}/admins'],
        capture_output=True, text=True, timeout=120)
    dom = done.stdout
    assert '<table>' in dom and '<th>name</th>' in dom
    assert '张三' in dom and 'Zoë 🚀' in dom
    assert '&lt;b&gt;' in dom  # the sample row with markup stays text
    assert 'Refused to' not in done.stderr  # the CSP lets the page's own stylesheet in


def test_the_readme_uwsgi_command_serves_behind_the_shipped_nginx_config(stack):
    """`uwsgi --socket /tmp/my.sock --wsgi-file wsgiapp/app.py`, from the checkout, as the README shows."""
    readme = (ROOT / 'README.rst').read_text()
    command = 'uwsgi --socket /tmp/my.sock --wsgi-file wsgiapp/app.py'
    assert command in readme
    sock = Path('/tmp/my.sock')
    if sock.exists():
        pytest.skip('/tmp/my.sock is in use by something else')
    base = new_base()
    base.mkdir(parents=True)
    env = {**os.environ, **stack.environ(), 'PATH': f'{Path(sys.executable).parent}:{os.environ["PATH"]}'}
    with open(base / 'uwsgi.log', 'wb') as log:
        uwsgi = subprocess.Popen(command.split(), cwd=ROOT, env=env, stdout=log, stderr=log)
    # Without chmod-socket the socket is its owner's only: nginx's workers run as that same
    # user here, as they would for a developer running both by hand.
    nginx = Nginx(base, free_port(), sock, free_port(), stack.nginx.certificate,
                  user='root' if os.geteuid() == 0 else None, run_dir=base / 'run')
    try:
        wait_for(lambda: sock.exists() or uwsgi.poll() is not None, 30, f'uwsgi to listen on {sock}')
        assert uwsgi.poll() is None, (base / 'uwsgi.log').read_text()
        nginx.start()
        status, _, body = request(stack, 'GET', '/', port=nginx.tls_port)
        assert status == 200 and b'<h1>hello world</h1>' in body
        status, _, body = request(stack, 'GET', '/api/admins', port=nginx.tls_port)
        assert status == 200 and json.loads(body)['items']
    finally:
        nginx.stop()
        uwsgi.terminate()
        uwsgi.wait(30)
        sock.unlink(missing_ok=True)
        shutil.rmtree(base, ignore_errors=True)


def test_make_run_twice_then_make_stop_leaves_nothing_behind(tmp_path):
    base, port, tls_port = new_base(), free_port(), free_port()
    make = ['make', '-s', f'VAR={base}', f'PORT={port}', f'TLS_PORT={tls_port}']
    env = {**os.environ, 'VENV': str(Path(sys.executable).parent.parent)}
    try:
        first = subprocess.run([*make, 'run'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stdout + first.stderr
        assert f'https://127.0.0.1:{tls_port}/' in first.stdout
        stack = Stack(base, port, tls_port)
        running = (stack.mariadb.pid(), stack.uwsgi.pid(), stack.nginx.pid())
        assert all(running)
        second = subprocess.run([*make, 'run'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0 and 'already running' in second.stdout
        assert (stack.mariadb.pid(), stack.uwsgi.pid(), stack.nginx.pid()) == running
        assert subprocess.run([*make, 'status'], cwd=ROOT, env=env, capture_output=True).returncode == 0
        stop = subprocess.run([*make, 'stop'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stderr
        assert not any(procs.alive(pid) for pid in running)
        assert in_process_group(running[1]) == []  # no uwsgi worker outlives its master
        leftovers = [p for p in base.rglob('*') if p.suffix in ('.sock', '.pid') or p.is_socket()]
        assert leftovers == []
        assert not stack.run_dir.exists()  # /run/wsgiapp-stack/ID as root, VAR/run otherwise: removed
        assert subprocess.run([*make, 'status'], cwd=ROOT, env=env, capture_output=True).returncode != 0
    finally:
        Stack(base, port, tls_port).down()
        shutil.rmtree(base, ignore_errors=True)
