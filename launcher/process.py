"""What every server of the launcher needs: finding its binary, pid files, stopping it,
its log's tail, and secrets written with mode 0600 from their first byte."""
import os
import secrets
import shutil
import socket
from contextlib import suppress
from pathlib import Path

from launcher.procs import alive as process_alive  # the launcher's (and the tests') name for it
from launcher.wait import TimedOut, wait_for

# The checkout: conf/, static files and the virtualenv are found from here.
ROOT = Path(__file__).resolve().parent.parent


def say(message):
    print(f'==> {message}', flush=True)


def binary(name):
    """A server's path: Debian puts mariadbd and nginx in /usr/sbin, which a non-root
    user's PATH often lacks."""
    found = shutil.which(name, path=f'{os.environ.get("PATH", "")}:/usr/local/sbin:/usr/sbin:/sbin')
    if found is None:
        raise RuntimeError(f'{name} is not installed (make installs the Debian packages it needs)')
    return found


def free_port(address='127.0.0.1'):
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def pid_alive(pidfile):
    """The pid in `pidfile` if that process runs, else None."""
    try:
        pid = int(Path(pidfile).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if process_alive(pid) else None


def wait_gone(pid, seconds):
    """True once `pid` has exited (and is reaped, if it is our child); False if it outlives `seconds`."""
    try:
        wait_for(lambda: not process_alive(pid), seconds, f'pid {pid} exiting')
    except TimedOut:
        return False
    with suppress(ChildProcessError):  # not our child: someone else reaps it
        os.waitpid(pid, os.WNOHANG)
    return True


def terminate(name, pid, first, patience, last):
    """Send `first`; if the process outlives `patience` seconds, send `last`."""
    say(f'stopping {name} (pid {pid})')
    try:
        os.kill(pid, first)
        if not wait_gone(pid, patience):
            os.kill(pid, last)
            wait_gone(pid, 10)
    except ProcessLookupError:
        pass


def tail(path, lines=20):
    try:
        return '\n'.join(Path(path).read_text(errors='replace').splitlines()[-lines:])
    except OSError:
        return '(no log)'


def tails(*logs):
    """The tail of each log, each under its name: what a server that failed to start said."""
    return ''.join(f'--- {log}\n{tail(log)}\n' for log in logs)


def secret_file(path, make=lambda: secrets.token_urlsafe(24)):
    """The secret in `path`, created on first use with mode 0600 from its first byte:
    O_EXCL so it is never rewritten, the mode given to open() so it is never readable by others."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text()
    with os.fdopen(fd, 'w') as out:
        out.write(make())
    return path.read_text()


def wait_ready(url, context, logs, seconds=30):
    """Until GET url/readyz answers 200 over HTTPS (trusting `context`); else TimedOut (a
    RuntimeError) with the last answer or error and the tail of each of `logs`."""
    import urllib.request
    say(f'waiting for {url}/readyz')

    def ready():
        with urllib.request.urlopen(f'{url}/readyz', timeout=2, context=context) as response:
            return response.status == 200
    wait_for(ready, seconds, f'{url}/readyz did not answer 200', interval=0.1, detail=lambda: tails(*logs))
