"""The manual's "Deploying on a server" (docs/deploy.rst), run exactly as written, on a
booted Debian 12 server (launcher/machine.py: systemd-nspawn over a cached image) with the
real programs: systemd runs the shipped unit (Type=notify, the real EnvironmentFile=),
certbot gets the certificate from pebble (the ACME test server, standing in for Let's
Encrypt) through nginx's port 80, `certbot renew --dry-run` validates again, and curl
fetches the site over HTTPS with the certificate issued. The commands are taken from the
page itself (every `.. code-block:: sh` of its first section), so the two cannot drift;
launcher/server.py runs them, as `make server` does.

The server is booted and deployed once per test session (`deployed_server`), and shared
with tests/test_server.py, which checks the unit's promises on the live service. To see a
hardening test fail, deploy a unit without one of its settings:
WSGIAPP_UNIT_WITHOUT=ProtectHome pytest tests/test_server.py (docs/server.rst)."""
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest

from launcher.logs import entries
from launcher.machine import CACHE, Machine
from launcher.server import DOMAIN, deploy, deploy_commands, deploy_script

pytestmark = [pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb, pytest.mark.server]
SERVER = pytest.StashKey()


def needs_a_server():
    if os.geteuid() != 0:
        pytest.skip('a booted server needs root (systemd-nspawn, overlay mounts, network namespaces)')
    if not shutil.which('systemd-nspawn'):
        pytest.skip('systemd-nspawn is missing (apt-get install systemd-container)')
    if not shutil.which('debootstrap') and not any(CACHE.glob('base-*')):
        pytest.skip('debootstrap is missing and no image is cached (apt-get install debootstrap)')


def deployed_server(request):
    """{'machine', 'done' (the deploy's CompletedProcess), 'seconds', 'pebble_root'}: one
    server for the whole session, booted and deployed on first use, stopped (every trace
    removed) when pytest ends. WSGIAPP_UNIT_WITHOUT=Setting deploys the unit without that
    line, restarted: the removal experiment."""
    needs_a_server()
    config = request.config
    if SERVER not in config.stash and os.environ.get('WSGIAPP_SERVER'):
        # A server `make server` is running (its directory): the tests use it, as it is.
        machine = Machine(os.environ['WSGIAPP_SERVER'], hosts={DOMAIN: 'server'})
        if not machine.pid:
            pytest.fail(f'WSGIAPP_SERVER={machine.dir}: no server runs there (make server VAR=...)')
        log = (machine.dir / 'deploy.log').read_text()
        config.stash[SERVER] = {'machine': machine, 'seconds': 0, 'pebble_root': machine.dir / 'pebble-root.pem',
                                'done': subprocess.CompletedProcess([], 0, log, '')}
    if SERVER not in config.stash:
        directory = Path(tempfile.mkdtemp(prefix='wsgiapp-server-', dir='/var/tmp'))
        machine = Machine(directory, hosts={DOMAIN: 'server'})
        server = config.stash[SERVER] = {'machine': machine}
        config.add_cleanup(machine.stop)
        try:
            machine.start()
            server['done'], server['seconds'] = deploy(machine)
            without = os.environ.get('WSGIAPP_UNIT_WITHOUT')
            if without and server['done'].returncode == 0:
                machine.run(f"sed -i '/^{without}=/d' /etc/systemd/system/wsgiapp.service && "
                            'systemctl daemon-reload && systemctl restart wsgiapp')
            server['pebble_root'] = directory / 'pebble-root.pem'
            server['pebble_root'].write_text(machine.read('/usr/local/share/ca-certificates/pebble-root.crt'))
        except Exception as error:
            server['error'] = error
    server = config.stash[SERVER]
    if 'error' in server:
        pytest.fail(f'the server did not boot: {server["error"]!r}')
    if server['done'].returncode != 0:
        pytest.fail('the deploy failed:\n' + (server['done'].stdout + server['done'].stderr)[-6000:])
    return server


@pytest.fixture
def server(request):
    return deployed_server(request)


def test_deploy_commands_are_extracted():
    blocks = deploy_commands()
    joined = '\n'.join(blocks)
    for expected in ('adduser --system', 'make install', 'wsgiapp initdb', 'GRANT SELECT, INSERT, UPDATE, DELETE',
                     'systemctl enable --now wsgiapp', 'certbot certonly', 'rm -f /etc/nginx/sites-enabled/default',
                     'wsgiapp check', 'certbot renew --dry-run', 'curl'):
        assert expected in joined
    # The GRANT on the table comes after initdb has created it.
    assert joined.index('wsgiapp initdb') < joined.index('GRANT SELECT')
    # Run as written: only the repository's URL is filled in.
    assert deploy_script().count('<repository-url>') == 0


def test_the_deploy_steps_work_as_written(server):
    done, machine = server['done'], server['machine']
    print(f'deployed in {server["seconds"]:.0f} s')
    assert 'all checks passed' in done.stdout
    assert '<h1>admins</h1>' in done.stdout and '<table>' not in done.stdout  # the new table is empty
    assert 'Successfully received certificate.' in done.stdout
    assert 'all simulated renewals succeeded' in done.stdout
    # The real unit, under the real systemd: Type=notify, running, never restarted.
    shown = dict(line.split('=', 1) for line in machine.run(
        ['systemctl', 'show', 'wsgiapp', '-p', 'Type,ActiveState,SubState,NRestarts,UnitFileState,User']
    ).stdout.split())
    assert shown == {'Type': 'notify', 'ActiveState': 'active', 'SubState': 'running', 'NRestarts': '0',
                     'UnitFileState': 'enabled', 'User': 'wsgiapp'}
    # Both HTTP-01 validations came through nginx on port 80, pebble fetching from the
    # server's address: the first through Debian's default site, the renewal's through the
    # wsgiapp site, as Debian's certbot.timer will renew it.
    challenge = '/.well-known/acme-challenge/'
    assert f'GET {challenge}' in machine.read('/var/log/nginx/access.log')  # Debian's format
    assert any(line['method'] == 'GET' and line['uri'].startswith(challenge)  # the site's JSON
               for line in entries(machine.read('/var/log/nginx/wsgiapp.access.log')))
    assert machine.run(['systemctl', 'is-active', 'certbot.timer'], check=False).stdout.strip() == 'active'


def test_the_site_answers_over_https_with_the_issued_certificate(server):
    """From outside the server, as a browser would: the name, port 443, pebble's root."""
    machine = server['machine']
    context = ssl.create_default_context(cafile=str(server['pebble_root']))
    with socket.create_connection((machine.address, 443), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=DOMAIN) as tls:
        certificate = tls.getpeercert()
        tls.sendall(f'GET /admins HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n'.encode())
        answer = b''
        while chunk := tls.recv(65536):
            answer += chunk
    assert answer.startswith(b'HTTP/1.1 200'), answer[:500]
    assert ('DNS', DOMAIN) in certificate['subjectAltName']
    issuer = dict(pair[0] for pair in certificate['issuer'])
    assert issuer['commonName'].startswith('Pebble Intermediate'), issuer
    # The certificate nginx serves is the one certbot saved.
    live = machine.run(['openssl', 'x509', '-noout', '-serial', '-in',
                        f'/etc/letsencrypt/live/{DOMAIN}/cert.pem']).stdout.strip()
    assert live.split('=')[1].lower() == certificate['serialNumber'].lower()


def test_a_server_stops_without_a_trace():
    """Boot, run, copy, stop: no process, mount, namespace, veth, bridge or directory left."""
    needs_a_server()
    directory = Path(tempfile.mkdtemp(prefix='wsgiapp-machine-', dir='/var/tmp'))
    machine = Machine(directory, hostname='bare')
    try:
        machine.start()
        assert machine.run(['systemctl', 'is-system-running']).stdout.strip() == 'running'
        machine.copy_in('hello\n', '/run/hello', mode=0o640, owner='nobody:nogroup')
        assert machine.run(['stat', '-c', '%U %a', '/run/hello']).stdout.split() == ['nobody', '640']
        assert machine.run(['cat', '/run/hello'], user='nobody', check=False).returncode == 0
        assert machine.run(['id', '-un'], user='nobody').stdout.strip() == 'nobody'
        assert machine.read('/etc/hostname').strip() == 'bare'
        machine_id = machine.read('/etc/machine-id').strip()
        host_id = Path('/etc/machine-id').read_text() if Path('/etc/machine-id').exists() else ''
        assert len(machine_id) == 32 and machine_id not in host_id
        assert machine.netns and machine.pid
    finally:
        machine.stop()
    assert machine.leftovers() == []
