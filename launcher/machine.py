"""A booted Debian 12 server on this machine: systemd-nspawn over a cached image, as root.

The image is two layers, cached outside the checkout in /var/cache/wsgiapp-images (shared by
every checkout, built once under a lock), each named by a hash of its recipe:

- base: `debootstrap --variant=minbase` of bookworm with systemd, dbus and iproute2;
- server: on top of it (an overlay upper directory, built with the host's network), the
  Debian packages docs/deploy.rst's intro installs and the build dependencies `make install`
  needs (the Makefile's SERVER_PACKAGES), pebble (a test ACME server), and a wheelhouse:
  the wheels of the app's requirements, built by the image's own python3 (uWSGI compiled
  there once). A server has no route off its bridge; `make install` inside it finds its
  packages in the wheelhouse (PIP_NO_INDEX, PIP_FIND_LINKS: `Machine.DEPLOY_ENV`).

Each Machine is an overlay of its own over the two layers (its own /etc, /var, hostname
and machine-id), booted by `systemd-nspawn -b` in a network namespace joined by a veth to a
bridge of its own (launcher/network.py): the host is .1 on the bridge, the server .3.
`stop()` removes every trace: the container, the overlay, the veth, the namespace, the
bridge and the state directory."""
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil

from launcher.network import Network
from launcher.process import ROOT, binary, say
from launcher.procs import alive, children
from launcher.wait import TimedOut, wait_for

CACHE = Path(os.environ.get('WSGIAPP_IMAGE_CACHE', '/var/cache/wsgiapp-images'))
SUITE, MIRROR = 'bookworm', 'http://deb.debian.org/debian'
BASE_PACKAGES = ['systemd', 'systemd-sysv', 'dbus', 'iproute2']
# docs/deploy.rst's intro; curl for its last step; pebble, the ACME server the test and
# `make server` issue the certificate from; procps, psmisc: ps and fuser for whoever logs in.
DOCS_PACKAGES = ['mariadb-server', 'nginx', 'certbot', 'python3-certbot-nginx', 'git', 'make', 'curl',
                 'ca-certificates', 'pebble', 'procps']
WHEELHOUSE = '/var/cache/wsgiapp-wheelhouse'
# What `make install` asks pip for: pip itself (--upgrade pip), the build backend of
# pyproject.toml, and setup.cfg's install_requires and [server] extra.
WHEELS = ['pip', 'setuptools>=61', 'wheel', 'mysqlclient>=2.1', 'uWSGI>=2.0.22']
# Units that have nothing to do in a container and would leave the system "degraded".
MASKED = ['systemd-networkd-wait-online.service', 'getty@tty1.service', 'console-getty.service']
PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'


def server_packages():
    """The Makefile's SERVER_PACKAGES: `make install`'s own apt-get is then a no-op."""
    text = (ROOT / 'Makefile').read_text()
    return re.search(r'^SERVER_PACKAGES\s*:=\s*(.+)$', text, re.M).group(1).split()


def run(*command, check=True, **kwargs):
    return subprocess.run([str(c) for c in command], check=check, capture_output=True, text=True, **kwargs)


# --- the image -----------------------------------------------------------------------------
def _key(*parts):
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def base_recipe():
    return ['debootstrap', '--variant=minbase', f'--include={",".join(BASE_PACKAGES)}', SUITE, MIRROR]


def server_recipe():
    return [sorted(set(DOCS_PACKAGES + server_packages())), WHEELS, MASKED, BUILD_SCRIPT]


@contextmanager
def _locked():
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _timed(what, function):
    started = time.monotonic()
    function()
    seconds = time.monotonic() - started
    say(f'{what}: {seconds:.0f} s')
    return seconds


def image():
    """The two layers' directories (server first, as overlayfs's lowerdir lists them), built
    when missing. A layer is complete once its directory has its final name."""
    base = CACHE / f'base-{_key(base_recipe())}'
    server = CACHE / f'server-{_key(base.name, server_recipe())}'
    if base.is_dir() and server.is_dir():
        return [server, base]
    with _locked():
        if not base.is_dir():
            _timed(f'building the base image {base.name} (debootstrap)', lambda: _build_base(base))
        if not server.is_dir():
            _timed(f'building the server layer {server.name} (apt-get, wheels)', lambda: _build_server(server, base))
    return [server, base]


def _build_base(target):
    partial = target.with_name(target.name + '.partial')
    shutil.rmtree(partial, ignore_errors=True)
    command = base_recipe()
    done = subprocess.run([binary(command[0]), *command[1:-2], command[-2], str(partial), command[-1]],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f'debootstrap failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}')
    partial.rename(target)


# Run inside the server layer under construction, with the host's network and the host's CA
# bundle (the registries' proxy) at /tmp/host-ca.crt.
BUILD_SCRIPT = r'''
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
apt-get update -qq
apt-get install -y -qq --no-install-recommends {packages} > /tmp/apt.log 2>&1 || {{ tail -50 /tmp/apt.log; exit 1; }}
rm -f /usr/sbin/policy-rc.d
systemctl mask {masked}
python3 -m venv /tmp/wheel-venv
PIP_CERT=/tmp/host-ca.crt /tmp/wheel-venv/bin/pip install -q --upgrade pip setuptools wheel
PIP_CERT=/tmp/host-ca.crt /tmp/wheel-venv/bin/pip wheel -q --wheel-dir {wheelhouse} {wheels}
rm -rf /tmp/wheel-venv /tmp/apt.log /tmp/host-ca.crt /root/.cache
apt-get clean
rm -rf /var/lib/apt/lists/*
'''


def _build_server(target, base):
    partial = target.with_name(target.name + '.partial')
    work = target.with_name(target.name + '.work')
    merged = target.with_name(target.name + '.merged')
    for directory in (partial, work, merged):
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir()
    run('mount', '-t', 'overlay', 'overlay', '-o', f'lowerdir={base},upperdir={partial},workdir={work}', merged)
    mounts = []
    try:
        shutil.copy('/etc/ssl/certs/ca-certificates.crt', merged / 'tmp' / 'host-ca.crt')
        shutil.copy('/etc/resolv.conf', merged / 'etc' / 'resolv.conf')
        for source, kind in (('proc', 'proc'), ('sysfs', 'sys')):
            run('mount', '-t', source, source, merged / kind)
            mounts.append(merged / kind)
        for directory in ('dev', 'dev/pts'):
            run('mount', '--bind', f'/{directory}', merged / directory)
            mounts.append(merged / directory)
        script = BUILD_SCRIPT.format(packages=' '.join(server_recipe()[0]), masked=' '.join(MASKED),
                                     wheelhouse=WHEELHOUSE, wheels=' '.join(shlex.quote(w) for w in WHEELS))
        done = subprocess.run(['chroot', str(merged), '/usr/bin/env', '-i', f'PATH={PATH}', 'HOME=/root',
                               'bash', '-c', script], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f'building the server layer failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}')
        (merged / 'etc' / 'resolv.conf').write_text('')  # a server resolves through its /etc/hosts only
    finally:
        for mount in reversed(mounts):
            run('umount', mount, check=False)
        run('umount', merged, check=False)
    shutil.rmtree(work, ignore_errors=True)
    merged.rmdir()
    partial.rename(target)


# --- a server ------------------------------------------------------------------------------
class Machine:
    """One booted server, its state in `directory` (the overlay's upper and work directories,
    its mount point `root`, the console log and machine.json). `hosts`: extra /etc/hosts
    lines, name -> address ('server' means this server's own address)."""

    HOST = 'server'  # launcher/network.py's name for it: address .3 on the bridge

    def __init__(self, directory, hostname='wsgiapp-server', hosts=None):
        self.dir = Path(directory).resolve()
        self.ident = hashlib.sha256(str(self.dir).encode()).hexdigest()[:4]
        self.hostname = hostname
        self.hosts = dict(hosts or {})
        self.root = self.dir / 'root'
        self.console = self.dir / 'console.log'
        self.state = self.dir / 'machine.json'
        self._network = None

    @property
    def network(self):
        if self._network is None:
            self._network = Network(self.ident)
        return self._network

    @property
    def address(self):
        return self.network.address(self.HOST)

    @property
    def netns(self):
        return self.network.netns(self.HOST)

    def _saved(self):
        try:
            return json.loads(self.state.read_text())
        except (OSError, ValueError):
            return {}

    @property
    def pid(self):
        """systemd-nspawn's pid, while it runs."""
        pid = self._saved().get('pid')
        return pid if pid and alive(pid) else None

    def leader(self):
        """The container's init (its pid 1), seen from the host: nspawn's child, once it is systemd."""
        for child in children(self.pid):
            with suppress(Exception):
                if child.name() == 'systemd':
                    return child.pid
        return None

    # --- start ------------------------------------------------------------------------------
    def start(self, seconds=180):
        if self.pid:
            return self
        layers = image()
        self.stop(quiet=True)  # whatever a crashed run left
        started = time.monotonic()
        try:
            for name in ('upper', 'work', 'root'):
                (self.dir / name).mkdir(parents=True, exist_ok=True)
            run('mount', '-t', 'overlay', f'wsgiapp-{self.ident}', '-o',
                f'lowerdir={":".join(map(str, layers))},upperdir={self.dir / "upper"},workdir={self.dir / "work"}',
                self.root)
            self.network.create()
            self.network.add_host(self.HOST)
            etc = self.root / 'etc'
            (etc / 'hostname').write_text(f'{self.hostname}\n')
            (etc / 'machine-id').write_text(uuid.uuid4().hex + '\n')  # each copy its own
            hosts = {'localhost': '127.0.0.1', self.hostname: '127.0.1.1',
                     **{name: self.address if address == 'server' else address for name, address in self.hosts.items()}}
            (etc / 'hosts').write_text(''.join(f'{address} {name}\n' for name, address in hosts.items()))
            say(f'booting {self.hostname} ({self.address}) in {self.dir}')
            with open(self.console, 'ab') as console:
                nspawn = subprocess.Popen(
                    [binary('systemd-nspawn'), '--quiet', '-D', str(self.root), '-b', '--register=no', '--keep-unit',
                     f'--machine=wsgiapp-{self.ident}', f'--hostname={self.hostname}', '--console=pipe',
                     f'--network-namespace-path=/run/netns/{self.netns}', '--resolv-conf=off', '--timezone=off',
                     '--link-journal=no'],
                    stdin=subprocess.DEVNULL, stdout=console, stderr=console, start_new_session=True)
            self.state.write_text(json.dumps({'pid': nspawn.pid, 'ident': self.ident, 'address': self.address,
                                              'netns': self.netns, 'hostname': self.hostname}))
            wait_for(self.leader, 30, f'{self.hostname} to start systemd', interval=0.1,
                     detail=lambda: self.console.read_text(errors='replace')[-2000:])
            wait_for(self._booted, seconds, f'{self.hostname} to boot (systemctl is-system-running)', interval=0.5,
                     detail=self._failed_units)
        except BaseException:
            self.stop(quiet=True)
            raise
        self.boot_seconds = time.monotonic() - started
        say(f'{self.hostname} is up in {self.boot_seconds:.1f} s')
        return self

    def _booted(self):
        state = self.run(['systemctl', 'is-system-running'], check=False).stdout.strip()
        if state == 'degraded':
            failed = self._failed_units()
            if failed.strip():
                raise AssertionError(f'{self.hostname} booted with failed units:\n{failed}')
            return True  # degraded, with no failed unit (left): as good as running
        return state == 'running'

    def _failed_units(self):
        if not self.leader():
            return self.console.read_text(errors='replace')[-2000:] if self.console.exists() else ''
        return self.run(['systemctl', '--failed', '--no-legend', '--plain'], check=False).stdout

    # --- inside -----------------------------------------------------------------------------
    def command(self, command, user=None, env=None):
        """The host command that runs `command` inside, as root or `user`, in a clean
        environment (env added), from /."""
        leader = self.leader()
        if leader is None:
            raise RuntimeError(f'{self.hostname} is not running')
        environ = {'PATH': PATH, 'HOME': '/root', 'LANG': 'C.UTF-8', 'TERM': 'dumb', **(env or {})}
        inside = ['/usr/bin/env', '-i', '-C', '/', *[f'{k}={v}' for k, v in environ.items()]]
        if user:
            inside += ['/usr/sbin/runuser', '-u', user, '--']
        return [binary('nsenter'), '-t', str(leader), '-a', *inside, *[str(c) for c in command]]

    def run(self, command, user=None, env=None, check=True, timeout=600, **kwargs):
        """subprocess.run inside; `command` a list, or a string for bash -c."""
        if isinstance(command, str):
            command = ['bash', '-c', command]
        done = subprocess.run(self.command(command, user, env), capture_output=True, text=True, timeout=timeout,
                              **kwargs)
        if check and done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, command, done.stdout, done.stderr)
        return done

    def popen(self, command, user=None, env=None, **kwargs):
        if isinstance(command, str):
            command = ['bash', '-c', command]
        return subprocess.Popen(self.command(command, user, env), **kwargs)

    def copy_in(self, source, destination, mode=0o644, owner='root:root'):
        """A file (a path on the host, or bytes/str content) to `destination` inside, through
        the server's own view of its file system (its /tmp and /run are its own tmpfs)."""
        if isinstance(source, str):
            data = source.encode()
        elif isinstance(source, bytes):
            data = source
        else:
            data = Path(source).read_bytes()
        script = 'umask 077 && cat > "$1" && chown "$2" "$1" && chmod "$3" "$1"'
        done = subprocess.run(self.command(['sh', '-c', script, 'sh', str(destination), owner, f'{mode:o}']),
                              input=data, capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f'copying to {destination}: {done.stderr.decode(errors="replace")}')

    def read(self, path):
        return self.run(['cat', str(path)]).stdout

    # --- stop ---------------------------------------------------------------------------------
    def stop(self, quiet=False):
        """Power the server off and remove every trace of it."""
        pid = self.pid
        if pid:
            if not quiet:
                say(f'stopping {self.hostname} (systemd-nspawn pid {pid})')
            leader = self.leader()
            # SIGRTMIN+4 to its systemd: a clean poweroff, after which nspawn exits.
            with suppress(ProcessLookupError, TypeError):
                os.kill(leader, signal.SIGRTMIN + 4)
            try:
                wait_for(lambda: not alive(pid), 60, f'{self.hostname} to power off', interval=0.2)
            except TimedOut:
                with suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                with suppress(ProcessLookupError, TypeError):
                    os.kill(leader, signal.SIGKILL)
                wait_for(lambda: not alive(pid), 10, 'systemd-nspawn to die', interval=0.1)
            with suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            with suppress(TimedOut):  # not our child (`make server` started it): init reaps it
                wait_for(lambda: not psutil.pid_exists(pid), 10, 'systemd-nspawn reaped', interval=0.1)
        if self.root.exists() and os.path.ismount(self.root):
            if run('umount', self.root, check=False).returncode != 0:
                run('umount', '-l', self.root, check=False)
        self.network.remove()
        if self.root.exists() and os.path.ismount(self.root):
            raise RuntimeError(f'{self.root} is still mounted; not removing {self.dir}')
        shutil.rmtree(self.dir, ignore_errors=True)

    def leftovers(self):
        """What of this server is still on the host: none after stop()."""
        found = [f'mount {line.split()[2]}' for line in Path('/proc/mounts').read_text().splitlines()
                 if str(self.dir) in line or f'wsgiapp-{self.ident} ' in line]
        found += self.network.leftovers()
        found += [f'pid {pid}' for pid in _nspawns(self.root)]
        if self.dir.exists():
            found.append(f'directory {self.dir}')
        return found


def _nspawns(root):
    pids = []
    for process in psutil.process_iter(['pid', 'cmdline']):
        cmdline = process.info['cmdline'] or []
        if cmdline and 'systemd-nspawn' in cmdline[0] and str(root) in cmdline:
            pids.append(process.pid)
    return pids
