"""The systemd unit, checked without systemd running: `systemd-analyze verify` and its
offline security score, then uwsgi started with the unit's own ExecStart, environment and
the hardening that applies outside systemd (no capabilities, no new privileges, its
umask), telling a NOTIFY_SOCKET of the test's own that it is ready."""
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import time

import pytest

from tests.test_security import uwsgi_packet
from launcher.process import ROOT, binary

UNIT = ROOT / 'conf' / 'systemd' / 'wsgiapp.service'


def service_settings():
    """[Service] of the unit as (key, value) pairs, in order."""
    pairs, section = [], None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith('['):
            section = line
        elif section == '[Service]' and line and not line.startswith('#'):
            key, _, value = line.partition('=')
            pairs.append((key, value))
    return pairs


def stand_in(text, tmp_path):
    """The unit's production paths, moved to this checkout and the test's directory."""
    return (text.replace('/srv/wsgiapp', str(ROOT)).replace('/etc/wsgiapp/env', str(tmp_path / 'env'))
            .replace('/run/wsgiapp', str(tmp_path / 'run')))


def test_systemd_analyze_verify_passes(tmp_path):
    (tmp_path / 'env').write_text('DATABASE_URL=mysql://u:p@localhost/d\n')
    unit = tmp_path / 'wsgiapp.service'
    unit.write_text(stand_in(UNIT.read_text(), tmp_path))
    done = subprocess.run(['systemd-analyze', 'verify', str(unit)], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_security_score_is_3_or_better():
    done = subprocess.run(['systemd-analyze', 'security', '--offline=true', str(UNIT)],
                          capture_output=True, text=True)
    score = float(re.search(r'Overall exposure level for \S+: ([\d.]+)', done.stdout).group(1))
    assert score <= 3.0, done.stdout
    assert ('NotifyAccess', 'main') in service_settings()


def receive(notify, seconds):
    """(message, sender pid) from the notify socket, or (None, None) after `seconds`."""
    notify.settimeout(seconds)
    try:
        data, ancillary, _, _ = notify.recvmsg(4096, socket.CMSG_SPACE(12))
    except socket.timeout:
        return None, None
    pid = next(struct.unpack('iII', cdata)[0] for level, kind, cdata in ancillary
               if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS)
    return data.decode(), pid


def ask(sock_path, path):
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(5)
        client.connect(str(sock_path))
        client.sendall(uwsgi_packet({'REQUEST_METHOD': 'GET', 'PATH_INFO': path, 'QUERY_STRING': '',
                                     'SERVER_PROTOCOL': 'HTTP/1.1', 'SERVER_NAME': 'x', 'SERVER_PORT': '80'}))
        return b''.join(iter(lambda: client.recv(65536), b''))


def test_uwsgi_under_the_units_settings_notifies_ready_once_it_answers_and_stops_on_sigterm(
        tmp_path, database_url, admin_kwargs):
    settings = service_settings()
    (tmp_path / 'run').mkdir()
    (tmp_path / 'env').write_text(f'DATABASE_URL={database_url}\nWSGIAPP_API_TOKEN=t0ken\n')
    environ = {'PATH': os.environ['PATH']}
    for key, value in settings:
        if key == 'EnvironmentFile':
            lines = open(stand_in(value, tmp_path)).read().splitlines()
            environ.update(line.split('=', 1) for line in lines if '=' in line and not line.startswith('#'))
        elif key == 'Environment':
            environ.update(item.split('=', 1) for item in shlex.split(stand_in(value, tmp_path)))
    group = 'www-data' if os.geteuid() == 0 else str(os.getegid())
    environ['WSGIAPP_SOCKET_OWNER'] = environ['WSGIAPP_SOCKET_OWNER'].replace('wsgiapp-sock', group) \
        .replace('wsgiapp:', f'{os.geteuid()}:')  # stand-ins for the unit's user and group
    command = shlex.split(stand_in(dict(settings)['ExecStart'], tmp_path))
    # What applies outside systemd: CapabilityBoundingSet= (none), NoNewPrivileges, UMask.
    assert dict(settings)['CapabilityBoundingSet'] == '' and dict(settings)['NoNewPrivileges'] == 'true'
    harden = [binary('setpriv'), '--no-new-privs', '--bounding-set=-all', '--inh-caps=-all']
    if os.geteuid() == 0:
        harden.insert(1, f'--groups={group}')  # the unit's SupplementaryGroups=, without CAP_CHOWN
    umask = int(dict(settings)['UMask'], 8)

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / 'notify'))
    notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    environ['NOTIFY_SOCKET'] = str(tmp_path / 'notify')
    sock = tmp_path / 'run' / 'uwsgi.sock'
    log = open(tmp_path / 'uwsgi.log', 'wb')
    uwsgi = subprocess.Popen([*harden, *command], env=environ, stdout=log, stderr=log,
                             preexec_fn=lambda: os.umask(umask))
    try:
        deadline, messages = time.monotonic() + 30, []
        while time.monotonic() < deadline:
            message, sender = receive(notify, 1)
            if message is None:
                assert uwsgi.poll() is None, (tmp_path / 'uwsgi.log').read_text()
                continue
            messages.append(message)
            if 'READY=1' in message.split('\n'):
                assert sender == uwsgi.pid  # the main process: what NotifyAccess=main admits
                # Ready means ready: the app answers at once, database route included.
                assert ask(sock, '/api/admins').startswith(b'HTTP/1.1 200')
                break
        else:
            pytest.fail(f'no READY=1 within 30 s; got {messages}\n{(tmp_path / "uwsgi.log").read_text()}')
        status = open(f'/proc/{uwsgi.pid}/status').read()
        assert re.search(r'^CapEff:\s+0+$', status, re.M) and re.search(r'^NoNewPrivs:\s+1$', status, re.M)
        uwsgi.send_signal(signal.SIGTERM)
        assert uwsgi.wait(40) is not None  # stopped: die-on-term, not uWSGI 2.0's reload on SIGTERM
        assert not sock.exists()  # vacuum
        assert 'reload' not in (tmp_path / 'uwsgi.log').read_text().lower()
    finally:
        if uwsgi.poll() is None:
            uwsgi.kill()
            uwsgi.wait()
        notify.close()
        log.close()
