"""uwsgi from the virtualenv, run with conf/uwsgi.ini as is: only the run directory, the
socket's owner and the app's settings come from the environment, as systemd's unit sets them."""
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

from launcher.notify import ReadyListener
from launcher.process import ROOT, pid_alive, say, tail, tails, terminate
from launcher.wait import wait_for
from wsgiapp.exporter import read_uwsgi_stats

# The system user uwsgi drops to when started as root (conf/uwsgi.ini's uid and gid), as
# production's `User=wsgiapp` (conf/systemd/wsgiapp.service); made by app_user() if missing.
APP_USER = 'wsgiapp'


def app_user():
    """The user (and group of the same name) uwsgi serves as. As root: the system user
    `wsgiapp`, created if missing (no home, no shell), so no uwsgi process runs as root.
    Otherwise uwsgi cannot change user, and runs as whoever started it."""
    import pwd
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    try:
        pwd.getpwnam(APP_USER)
    except KeyError:
        say(f'creating the system user {APP_USER} for uwsgi')
        subprocess.run(['useradd', '--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent',
                        '--shell', '/usr/sbin/nologin', APP_USER], check=True, capture_output=True)
    return APP_USER


def app_ids():
    """(uid, gid) of app_user()."""
    import pwd
    entry = pwd.getpwnam(app_user())
    return entry.pw_uid, entry.pw_gid


def socket_owner():
    """user:group for the uwsgi socket. As root, nginx's workers run as www-data (see
    nginx.py), so the socket goes to that group, as in production, and to uwsgi's user."""
    import grp
    import pwd
    if os.geteuid() == 0:
        return f'{app_user()}:www-data'
    return f'{pwd.getpwuid(os.geteuid()).pw_name}:{grp.getgrgid(os.getegid()).gr_name}'


class Uwsgi:
    def __init__(self, base, run_dir=None, ini=ROOT / 'conf' / 'uwsgi.ini'):
        self.base = Path(base).resolve()
        self.run_dir = Path(run_dir) if run_dir else self.base / 'run'
        self.socket = self.run_dir / 'uwsgi.sock'
        self.pidfile = self.run_dir / 'uwsgi.pid'
        self.stats = self.run_dir / 'stats.sock'
        self.log = self.base / 'uwsgi.log'
        self.ini = ini

    def pid(self):
        return pid_alive(self.pidfile)

    def command(self, args=()):
        return [str(Path(sys.executable).parent / 'uwsgi'), '--ini', str(self.ini), *args]

    def environ(self, environ):
        return {**os.environ, 'WSGIAPP_RUN_DIR': str(self.run_dir), 'WSGIAPP_SOCKET_OWNER': socket_owner(),
                'WSGIAPP_USER': app_user(), **environ}

    def start(self, environ, args=(), wrap=(), seconds=30):
        """Start uwsgi and return once it says it is ready, as systemd's Type=notify waits:
        uwsgi sends READY=1 to $NOTIFY_SOCKET after the app is loaded, so an app that fails to
        load (a malformed setting, need-app) is an error here, not a socket that never answers."""
        if self.pid():
            say(f'uwsgi is already running (pid {self.pid()}, socket {self.socket})')
            return
        self.base.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        say(f'starting uwsgi on {self.socket} (log: {self.log})')
        # uwsgi sends READY=1 once it is the user it drops to (conf/uwsgi.ini's uid).
        owner = app_ids()[0] if os.geteuid() == 0 else None
        with ReadyListener(owner) as ready, open(self.log, 'ab') as log:
            process = subprocess.Popen([*wrap, *self.command(args)], env={**self.environ(environ), **ready.environ},
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
            started = time.monotonic()
            if not ready.wait(process, seconds):
                why = (f'it exited with status {process.returncode}' if process.poll() is not None
                       else f'no READY=1 within {seconds} s')
                raise RuntimeError(f'uwsgi did not start ({why}); its log says:\n{tail(self.log)}')
            self._wait_workers(process, seconds - (time.monotonic() - started))

    def _wait_workers(self, process, seconds):
        """uWSGI 2.0 says READY=1 before it forks its workers, and a SIGTERM that arrives
        before they are forked is lost (the master then waits for workers nobody told to
        stop). Its stats server answers only once the master's loop runs, after the fork."""
        def stats_or_exited():
            if process.poll() is not None:
                return 'exited'
            return self.stats_json() and 'running'
        if wait_for(stats_or_exited, max(seconds, 1), 'uwsgi did not start its workers', interval=0.02,
                    detail=lambda: tails(self.log)) == 'exited':
            raise RuntimeError(f'uwsgi did not start its workers (it exited with status {process.returncode}); '
                               f'its log says:\n{tail(self.log)}')

    def stats_json(self):
        """What uwsgi's stats server says (it answers once the master's loop runs)."""
        return read_uwsgi_stats(self.stats, timeout=1)

    def workers(self):
        """The pids of the workers running now, from the stats server."""
        return {worker['pid'] for worker in self.stats_json()['workers'] if worker['pid'] > 0}

    def reload(self, seconds=60):
        """A graceful reload (SIGHUP, what `systemctl reload` sends), returning once every
        worker has been replaced. uwsgi re-executes itself to reload, and a second SIGHUP that
        arrives before the new program has set its handlers kills it (SIGHUP's default
        action): one reload at a time."""
        before = self.workers()
        os.kill(self.pid(), signal.SIGHUP)

        def replaced():
            now = self.workers()
            return len(now) == len(before) and not now & before
        wait_for(replaced, seconds, 'uwsgi to replace its workers after SIGHUP', interval=0.05,
                 detail=lambda: tails(self.log))

    def stop(self):
        pid = self.pid()
        if pid:
            # die-on-term: on SIGTERM the master stops its workers, then itself.
            terminate('uwsgi', pid, signal.SIGTERM, 40, signal.SIGKILL)
            # The master leads its own process group (start_new_session): nothing of it may
            # outlive it, even a worker it lost track of.
            with suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        for leftover in (self.socket, self.pidfile, self.stats):
            leftover.unlink(missing_ok=True)
