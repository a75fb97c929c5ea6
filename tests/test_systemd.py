"""The systemd unit, checked without systemd running: `systemd-analyze verify` and its
offline security score, then uwsgi started with the unit's own ExecStart, environment and
the hardening that applies outside systemd (no capabilities, no new privileges, its
umask), telling a NOTIFY_SOCKET of the test's own that it is ready."""
import os
import pwd
import re
import shlex
import signal
import subprocess

import pytest

from launcher.process import ROOT, binary
from tests.helpers.procs import privileges
from tests.helpers.systemd import ReadyListener, unit_environment, unit_settings
from tests.helpers.web import ask_socket, uwsgi_get

pytestmark = [pytest.mark.uwsgi, pytest.mark.mariadb]
UNIT = ROOT / 'conf' / 'systemd' / 'wsgiapp.service'


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


def test_security_score_is_the_one_the_unit_promises():
    promised = re.search(r'`systemd-analyze security wsgiapp` scores this unit ([\d.]+)', UNIT.read_text())
    assert promised, 'the unit no longer says what it scores'
    done = subprocess.run(['systemd-analyze', 'security', '--offline=true', str(UNIT)],
                          capture_output=True, text=True)
    score = re.search(r'Overall exposure level for \S+: ([\d.]+)', done.stdout)
    assert score, done.stdout + done.stderr
    assert float(score.group(1)) == float(promised.group(1)), done.stdout
    assert ('NotifyAccess', 'main') in unit_settings(UNIT)


def test_uwsgi_under_the_units_settings_notifies_ready_once_it_answers_and_stops_on_sigterm(
        tmp_path, database_url, admin_kwargs):
    settings = unit_settings(UNIT)
    one = dict(settings)
    (tmp_path / 'run').mkdir()
    (tmp_path / 'env').write_text(f'DATABASE_URL={database_url}\nWSGIAPP_API_TOKEN=t0ken\n')
    environ = {'PATH': os.environ['PATH'], **unit_environment(settings, lambda value: stand_in(value, tmp_path))}
    assert environ['DATABASE_URL'] == database_url  # read from the EnvironmentFile=, as systemd reads it
    group = 'www-data' if os.geteuid() == 0 else str(os.getegid())
    environ['WSGIAPP_SOCKET_OWNER'] = environ['WSGIAPP_SOCKET_OWNER'].replace('wsgiapp-sock', group) \
        .replace('wsgiapp:', f'{os.geteuid()}:')  # stand-ins for the unit's user and group
    # The unit's User= and Group=: this test's own, which uwsgi's uid/gid then leave as they are.
    environ['WSGIAPP_USER'] = pwd.getpwuid(os.geteuid()).pw_name
    command = shlex.split(stand_in(one['ExecStart'], tmp_path))
    # What applies outside systemd: CapabilityBoundingSet= (none), NoNewPrivileges, UMask.
    assert one['CapabilityBoundingSet'] == '' and one['NoNewPrivileges'] == 'true'
    harden = [binary('setpriv'), '--no-new-privs', '--bounding-set=-all', '--inh-caps=-all']
    if os.geteuid() == 0:
        harden.insert(1, f'--groups={group}')  # the unit's SupplementaryGroups=, without CAP_CHOWN
    umask = int(one['UMask'], 8)

    sock = tmp_path / 'run' / 'uwsgi.sock'
    log = tmp_path / 'uwsgi.log'
    with ReadyListener() as ready, open(log, 'wb') as output:
        uwsgi = subprocess.Popen([*harden, *command], env={**environ, **ready.environ}, stdout=output,
                                 stderr=output, preexec_fn=lambda: os.umask(umask))
        try:
            assert ready.wait(uwsgi, 30), f'no READY=1 within 30 s; got {ready.messages}\n{log.read_text()}'
            # The main process said so (setpriv execs uwsgi): what NotifyAccess=main admits.
            assert ready.senders[-1] == uwsgi.pid
            # Ready means ready: the app answers at once, database route included.
            assert ask_socket(sock, uwsgi_get('/api/admins')).startswith(b'HTTP/1.1 200')
            assert privileges(uwsgi.pid) == (0, True)  # no effective capability, no new privileges
            uwsgi.send_signal(signal.SIGTERM)
            # Stopped, and cleanly: die-on-term makes SIGTERM a stop (uWSGI 2.0 alone would take it
            # for a reload), and an exit status of 0 is what systemd counts as a clean stop
            # (Restart=on-failure leaves it stopped).
            assert uwsgi.wait(int(one['TimeoutStopSec'])) == 0, log.read_text()[-3000:]
            assert not sock.exists()  # vacuum
            assert 'reload' not in log.read_text().lower()
        finally:
            if uwsgi.poll() is None:
                uwsgi.kill()
                uwsgi.wait()
