"""python -m wsgiapp serve | initdb | token: the commands a user types."""
import json
import os
import re
import subprocess
import sys
import urllib.request

from launcher.process import free_port
from launcher.wait import wait_for


def wsgiapp(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, '-m', 'wsgiapp', *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60, **kwargs)


def test_token_prints_a_strong_token_and_nothing_else():
    first, second = wsgiapp('token'), wsgiapp('token')
    for done in (first, second):
        assert done.returncode == 0 and done.stderr == ''
        # 32 random bytes in URL-safe base64: safe unquoted in an environment file and a header.
        assert re.fullmatch(r'[A-Za-z0-9_-]{43}\n', done.stdout), done.stdout
    assert first.stdout != second.stdout


def test_initdb_creates_the_table_and_samples(admin_url, sql):
    done = wsgiapp('initdb', '--sample', env={'DATABASE_URL': admin_url})
    assert done.returncode == 0, done.stderr
    assert 'vc_admin is ready with 5 rows' in done.stderr
    assert sql('SELECT COUNT(*) FROM vc_admin') == ((5,),)


def test_initdb_as_the_apps_own_user_on_an_existing_table(database_url, add):
    # The app's user has SELECT, INSERT, UPDATE, DELETE only: no CREATE, even IF NOT EXISTS.
    add('kept')
    done = wsgiapp('initdb', env={'DATABASE_URL': database_url})
    assert done.returncode == 0, done.stderr
    assert 'vc_admin is ready with 1 rows' in done.stderr


def test_initdb_without_database_url_names_it():
    env = {key: value for key, value in os.environ.items() if key != 'DATABASE_URL'}
    done = subprocess.run([sys.executable, '-m', 'wsgiapp', 'initdb'], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode != 0 and 'DATABASE_URL is not set' in done.stderr


def test_serve_runs_the_development_server(database_url, add):
    add('served')
    port = free_port()
    server = subprocess.Popen([sys.executable, '-m', 'wsgiapp', 'serve', '--port', str(port)],
                              env={**os.environ, 'DATABASE_URL': database_url},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    def listing():
        if server.poll() is not None:
            return 'exited'  # wait_for keeps trying; the assertion below names the cause
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/api/admins', timeout=2) as response:
            return json.load(response)

    try:
        answer = wait_for(listing, 20, 'the development server to answer', interval=0.1)
        assert answer != 'exited', server.stderr.read()
        assert answer['items'][0]['name'] == 'served'
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=2) as response:
            assert b'<h1>hello world</h1>' in response.read()
    finally:
        server.terminate()
        server.wait(10)
