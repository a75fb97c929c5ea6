"""What an attacker on the same server, or on the network, tries: packets straight to the
uwsgi socket, floods of headers, the private database's root account over TCP, clear-text
HTTP, and secrets left readable on disk."""
import os
import socket
import ssl
import stat
import subprocess
import time

import MySQLdb
import pytest
import webtest

from launcher.process import free_port, secret_file
from tests.helpers.web import ask_socket, read_all, request, uwsgi_get
from wsgiapp.app import Application

pytestmark = [pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]


def send_as_socket_group(path, packet):
    """Send `packet` to the unix socket from a process running as nginx's user (www-data),
    which is what any other program in that group could do; as a non-root user, as ourselves."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to www-data, send, hand back the answer
        os.close(read)
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(33)
                os.setuid(33)
            answer = ask_socket(path, packet, timeout=10)
            os.write(write, answer[:4096] or b'(no answer)')
        except OSError as error:
            os.write(write, f'error: {error}'.encode())
        os._exit(0)
    os.close(write)
    answer = b''.join(iter(lambda: os.read(read, 65536), b''))
    os.close(read)
    os.waitpid(pid, 0)
    return answer


@pytest.mark.parametrize('variables', [
    {'UWSGI_FILE': '{evil}', 'SCRIPT_NAME': '/evil'},
    {'UWSGI_FILE': 'exec://touch {marker}.exec', 'SCRIPT_NAME': '/evil'},
    {'UWSGI_SCRIPT': 'evilmod', 'UWSGI_CHDIR': '{dir}', 'SCRIPT_NAME': '/evil'},
    {'UWSGI_MODULE': 'evilmod', 'UWSGI_CALLABLE': 'application', 'UWSGI_CHDIR': '{dir}', 'SCRIPT_NAME': '/evil'},
    {'UWSGI_FILE': '{evil}', 'UWSGI_APPID': 'evil'},
], ids=['file', 'exec', 'script', 'module', 'appid'])
def test_the_socket_loads_and_runs_nothing_but_the_app(stack, tmp_path, variables):
    tmp_path.chmod(0o755)
    marker = tmp_path / 'MARKER'
    evil = tmp_path / 'evilmod.py'
    evil.write_text(f'open({str(marker)!r}, "w").write("loaded")\n'
                    'def application(environ, start_response):\n'
                    '    start_response("200 OK", [])\n    return [b"evil"]\n')
    evil.chmod(0o644)
    fill = {'evil': str(evil), 'marker': str(marker), 'dir': str(tmp_path)}
    packet = uwsgi_get('/', REMOTE_ADDR='127.0.0.1', **{k: v.format(**fill) for k, v in variables.items()})
    log_before = stack.uwsgi.log.read_text()
    for _ in range(4):  # more than one worker may be asked
        answer = send_as_socket_group(stack.uwsgi.socket, packet)
        assert b'evil' not in answer.split(b'\r\n\r\n', 1)[-1]
    time.sleep(0.5)
    assert not marker.exists() and not (tmp_path / 'MARKER.exec').exists()
    new_log = stack.uwsgi.log.read_text()[len(log_before):]
    assert "mountpoint='/evil'" not in new_log and 'WSGI app 1' not in new_log, new_log
    # Every worker still answers, promptly.
    for _ in range(8):
        status, _, body = request(stack, 'GET', '/')
        assert status == 200 and b'hello world' in body


def test_a_packet_with_uwsgi_control_variables_is_refused_by_the_app(settings):
    app = webtest.TestApp(Application(settings))
    response = app.get('/', extra_environ={'UWSGI_SETENV': 'X=1'}, status=400, expect_errors=True)
    assert 'did not come through the web server' in response.text
    assert 'something other than nginx can reach the socket' in response.errors  # said in the log


@pytest.mark.parametrize('count', [113, 500, 990, 3000])
def test_many_headers_get_the_app_or_a_clean_4xx_never_a_5xx(stack, count):
    headers = {f'X-H{n}': 'v' for n in range(count)}
    status, _, body = request(stack, 'GET', '/api/admins?limit=1', headers=headers)
    assert status == 200 or 400 <= status < 500, (status, body[:200])
    if count <= 990:
        assert status == 200


def test_the_most_headers_nginx_accepts_never_give_a_5xx(stack):
    """The shortest header lines, as many as nginx's 4 x 8 KiB buffers hold."""
    with socket.create_connection(('127.0.0.1', stack.tls_port), timeout=10) as plain:
        with stack.ssl_context().wrap_socket(plain, server_hostname='127.0.0.1') as client:
            lines = b''.join(b'a%d:\r\n' % n for n in range(6000))
            client.sendall(b'GET /api/admins?limit=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n' + lines + b'\r\n')
            answer = read_all(client)
    status = int(answer.split(b' ', 2)[1])
    assert status == 200 or 400 <= status < 500, answer[:300]


def test_the_private_database_refuses_root_over_tcp(tmp_path):
    from launcher.mariadb import MariaDB
    server = MariaDB(tmp_path / 'db', port=free_port())
    server.start()
    try:
        for user in ('root', server.admin_user, 'mysql', ''):
            with pytest.raises(MySQLdb.OperationalError) as refused:
                MySQLdb.connect(host='127.0.0.1', port=server.port, user=user, connect_timeout=5).close()
            assert refused.value.args[0] in (1045, 1698), refused.value
        # The app's user gets in over TCP with its password, and has no FILE privilege.
        con = MySQLdb.connect(host='127.0.0.1', port=server.port, user='wsgiapp', password=server.password(),
                              database='wsgiapp')
        with pytest.raises(MySQLdb.OperationalError):
            con.cursor().execute(f"SELECT 1 INTO OUTFILE '{tmp_path}/x'")
        con.close()
        assert server.sql('SELECT @@secure_file_priv')[0][0].rstrip('/') == str(server.files_dir)
    finally:
        server.stop()


def test_secret_files_are_0600_from_their_first_byte(tmp_path, monkeypatch):
    modes = []
    real_open = os.open

    def watching_open(path, flags, mode=0o777, *args, **kwargs):
        fd = real_open(path, flags, mode, *args, **kwargs)
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))  # before a single byte is written
        return fd
    monkeypatch.setattr(os, 'open', watching_open)
    old = os.umask(0)
    try:
        assert secret_file(tmp_path / 'secret', lambda: 's3cret') == 's3cret'
    finally:
        os.umask(old)
    assert modes == [0o600]
    assert stat.S_IMODE((tmp_path / 'secret').stat().st_mode) == 0o600
    assert secret_file(tmp_path / 'secret', lambda: 'other') == 's3cret'  # never rewritten


def test_tls_keys_are_never_readable_by_others(stack):
    keys = sorted(stack.tls_dir.glob('*.key'))
    assert keys  # the CA's and the server's, at least
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) & 0o077 == 0, key


def test_https_with_hsts_and_port_80_only_redirects(stack):
    status, headers, _ = request(stack, 'GET', '/admins?limit=1')
    assert status == 200 and headers['Strict-Transport-Security'] == 'max-age=63072000'
    status, headers, _ = request(stack, 'GET', '/admins?limit=1', tls=False)
    assert status == 301 and headers['Location'] == f'https://127.0.0.1:{stack.tls_port}/admins?limit=1'
    status, headers, _ = request(stack, 'POST', '/api/admins', b'{}', tls=False,
                                 headers={'Authorization': f'Bearer {stack.token()}'})
    assert status == 301  # the token is never answered in clear text
    challenge = stack.run_dir / 'acme' / '.well-known' / 'acme-challenge'
    challenge.mkdir(parents=True, exist_ok=True)
    (challenge / 'token123').write_text('token123.thumbprint')
    for path in (challenge.parent, challenge, challenge / 'token123'):
        path.chmod(0o755 if path.is_dir() else 0o644)
    status, _, body = request(stack, 'GET', '/.well-known/acme-challenge/token123', tls=False)
    assert status == 200 and body == b'token123.thumbprint'


@pytest.mark.parametrize('version, accepted', [
    (ssl.TLSVersion.TLSv1_1, False), (ssl.TLSVersion.TLSv1_2, True), (ssl.TLSVersion.TLSv1_3, True)])
def test_tls_versions(stack, version, accepted):
    context = ssl.create_default_context(cafile=str(stack.ca))
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers('DEFAULT:@SECLEVEL=0')
    context.minimum_version = context.maximum_version = version
    context.set_alpn_protocols(['h2', 'http/1.1'])
    try:
        with socket.create_connection(('127.0.0.1', stack.tls_port), timeout=5) as plain:
            with context.wrap_socket(plain, server_hostname='localhost') as client:
                names = {ssl.TLSVersion.TLSv1_2: 'TLSv1.2', ssl.TLSVersion.TLSv1_3: 'TLSv1.3'}
                assert client.version() == names[version]
                assert client.selected_alpn_protocol() == 'h2'  # HTTP/2 is offered
                cipher = client.cipher()[0]
                assert 'GCM' in cipher or 'CHACHA20' in cipher
    except (ssl.SSLError, ConnectionResetError):
        assert not accepted
    else:
        assert accepted


def test_certificate_is_valid_for_localhost_and_127_0_0_1(stack):
    for name in ('localhost', '127.0.0.1'):
        with socket.create_connection(('127.0.0.1', stack.tls_port), timeout=5) as plain:
            with stack.ssl_context().wrap_socket(plain, server_hostname=name) as client:
                assert client.getpeercert()
    done = subprocess.run(['openssl', 'verify', '-CAfile', str(stack.ca), str(stack.tls_dir / 'localhost.pem')],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
