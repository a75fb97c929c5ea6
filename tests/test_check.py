"""`python -m wsgiapp check` names the fix for each classic fault of the seed post."""
import argparse
import os
import socket

import pytest

from wsgiapp import check
from wsgiapp.stack.process import ROOT

SITE = ROOT / 'conf' / 'nginx' / 'wsgiapp.conf'


def run(tmp_path, environ, ini=ROOT / 'conf' / 'uwsgi.ini', sock=None, site=SITE, nginx_user='root'):
    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    args = parser.parse_args(['--ini', str(ini), '--nginx-conf', str(site), '--nginx-user', nginx_user,
                              '--socket', str(sock or tmp_path / 'missing.sock')])
    lines = []
    status = check.main(args, environ=environ, out=lines.append)
    return status, '\n'.join(lines)


@pytest.fixture
def listening(tmp_path):
    """A real listening unix socket, like uwsgi's."""
    path = tmp_path / 'uwsgi.sock'
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    yield path
    server.close()


def test_ini_without_uwsgi_header(tmp_path):
    ini = tmp_path / 'config.ini'
    ini.write_text('socket = /tmp/my.sock\nchmod-socket = 666\nmaster = true\n')
    status, output = run(tmp_path, {}, ini=ini)
    assert status == 1
    assert 'does not start with the [uwsgi] section header' in output and 'add a line "[uwsgi]"' in output
    assert 'chmod-socket = 666' in output


def test_shipped_ini_passes(tmp_path):
    assert 'has its [uwsgi] header' in run(tmp_path, {})[1]


def test_socket_missing(tmp_path):
    output = run(tmp_path, {})[1]
    assert 'does not exist (nginx would answer 502)' in output and 'fix: start uwsgi' in output


def test_stale_socket_file_refuses(tmp_path):
    path = tmp_path / 'stale.sock'
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the file stays, nobody listens: uwsgi was killed without vacuum
    output = run(tmp_path, {}, sock=path)[1]
    assert 'refuses connections' in output


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root to hand the socket to another owner')
def test_socket_nginx_cannot_connect_to(tmp_path, listening):
    os.chmod(listening, 0o600)  # root only: www-data may not connect
    os.chmod(tmp_path, 0o755)
    output = run(tmp_path, {}, sock=listening, nginx_user='www-data')[1]
    assert 'nginx user www-data may not connect' in output and 'chmod-socket = 660' in output
    os.chown(listening, 0, __import__('grp').getgrnam('www-data').gr_gid)
    os.chmod(listening, 0o660)
    assert 'nginx user www-data may connect' in run(tmp_path, {}, sock=listening, nginx_user='www-data')[1]


def test_world_writable_socket(tmp_path, listening):
    os.chmod(listening, 0o666)
    assert 'world-writable' in run(tmp_path, {}, sock=listening)[1]


def test_nginx_site_without_uwsgi_params(tmp_path):
    site = tmp_path / 'site.conf'
    site.write_text('server {\n  location / {\n    # include uwsgi_params;\n    uwsgi_pass unix:/tmp/my.sock;\n  }\n}\n')
    output = run(tmp_path, {}, site=site)[1]
    assert 'does not include uwsgi_params' in output and 'add "include uwsgi_params;"' in output
    assert 'includes uwsgi_params' in run(tmp_path, {})[1]


def test_database_url_unset_or_malformed(tmp_path):
    assert 'DATABASE_URL is not set' in run(tmp_path, {})[1]
    output = run(tmp_path, {'DATABASE_URL': 'mysql://u:secret-pw@h:port/d'})[1]
    assert 'DATABASE_URL' in output and 'secret-pw' not in output


def test_database_unreachable(tmp_path):
    output = run(tmp_path, {'DATABASE_URL': f'mysql://u:p@localhost/d?unix_socket={tmp_path}/no.sock'})[1]
    assert 'could not be reached' in output and 'start MariaDB' in output


def test_database_refused_and_schema_missing(tmp_path, mariadb, database_url, admin_url, sql):
    if mariadb is None:
        pytest.skip('needs the private server')
    wrong = database_url.replace('wsgiapp:', 'wsgiapp:wrong', 1)
    output = run(tmp_path, {'DATABASE_URL': wrong})[1]
    assert 'Access denied' in output and 'check the user and password' in output
    sql('CREATE DATABASE IF NOT EXISTS wsgiapp_noschema')
    output = run(tmp_path, {'DATABASE_URL': admin_url.replace('/wsgiapp?', '/wsgiapp_noschema?')})[1]
    assert 'no vc_admin table' in output and 'python -m wsgiapp initdb' in output
    assert 'vc_admin exists' in run(tmp_path, {'DATABASE_URL': database_url})[1]
