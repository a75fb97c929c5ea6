"""A booted Debian 12 server on this machine: systemd-nspawn over a cached image, as root.

The image is a stack of layers, cached outside the checkout in /var/cache/wsgiapp-images
(shared by every checkout, built once under a lock), each named by a hash of its recipe and
of the layer under it:

- base: `debootstrap --variant=minbase` of bookworm with systemd, dbus and iproute2;
- server: on top of it (an overlay upper directory, built with the host's network), the
  Debian packages docs/deploy.rst's intro installs and the build dependencies `make install`
  needs (the Makefile's SERVER_PACKAGES), pebble (a test ACME server), and a wheelhouse:
  the wheels of the app's requirements, built by the image's own python3 (uWSGI compiled
  there once). A server has no route off its bridge; `make install` inside it finds its
  packages in the wheelhouse (PIP_NO_INDEX, PIP_FIND_LINKS: `Machine.DEPLOY_ENV`);
- fleet (only for `Machine(..., layers='fleet')`, launcher/fleet.py): on top of server,
  openssh-server for a root login by key only, and sudo, without host keys (each host gets
  its own).

Each Machine is an overlay of its own over the layers (its own /etc, /var, hostname and
machine-id), booted by `systemd-nspawn -b` in a network namespace joined by a veth to a
bridge (launcher/network.py): by default a bridge of its own, the host .1 on it, the server
.3; or, given `network` and `host`, a bridge shared with other machines (a fleet), at that
host's address. `stop()` removes every trace: the container, the overlay, the veth, the
namespace, the bridge (its own only) and the state directory. `crash()` is a power loss:
with `persistent`, the next `start()` boots from the same disk (the overlay's upper directory)."""
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


def image(top='server'):
    """The layers' directories up to `top` ('server' or 'fleet'), the top first, as overlayfs's
    lowerdir lists them; built when missing. A layer is complete once its directory has its
    final name."""
    base = CACHE / f'base-{_key(base_recipe())}'
    server = CACHE / f'server-{_key(base.name, server_recipe())}'
    layers = [server, base]
    if top == 'fleet':
        layers.insert(0, CACHE / f'fleet-{_key(server.name, fleet_recipe())}')
    if all(layer.is_dir() for layer in layers):
        return layers
    with _locked():
        if not base.is_dir():
            _timed(f'building the base image {base.name} (debootstrap)', lambda: _build_base(base))
        if not server.is_dir():
            _timed(f'building the server layer {server.name} (apt-get, wheels)', lambda: _build_server(server, base))
        if top == 'fleet' and not layers[0].is_dir():
            _timed(f'building the fleet layer {layers[0].name} (openssh-server)',
                   lambda: _build_layer(layers[0], [server, base], fleet_script(), 'the fleet layer'))
    return layers


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
    script = BUILD_SCRIPT.format(packages=' '.join(server_recipe()[0]), masked=' '.join(MASKED),
                                 wheelhouse=WHEELHOUSE, wheels=' '.join(shlex.quote(w) for w in WHEELS))
    _build_layer(target, [base], script, 'the server layer')


# The fleet layer: what Ansible needs of a host (sshd, python3, python3-apt for its apt module,
# which would install it from the archive these hosts cannot reach; sftp for its file transfers;
# sudo for `become`). The package's host keys go: a copy of this layer must not share them.
# The exporters too, which the playbook's monitoring role enables per kind of host.
FLEET_PACKAGES = ['openssh-server', 'openssh-sftp-server', 'python3', 'python3-apt', 'sudo',
                  'prometheus-node-exporter', 'prometheus-nginx-exporter', 'prometheus-mysqld-exporter']
# A drop-in: Debian's sshd_config includes sshd_config.d/*.conf first, and sshd keeps the
# first value it reads for each setting.
SSHD_CONFIG = """\
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
"""
FLEET_SCRIPT = r'''
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
apt-get update -qq
apt-get install -y -qq --no-install-recommends {packages} > /tmp/apt.log 2>&1 || {{ tail -50 /tmp/apt.log; exit 1; }}
rm -f /usr/sbin/policy-rc.d /etc/ssh/ssh_host_*
# A fresh host runs nothing of the app's: the playbook enables what each kind of host needs.
systemctl disable mariadb.service mariadb.socket nginx.service prometheus-node-exporter.service \
    prometheus-nginx-exporter.service prometheus-mysqld-exporter.service
printf '%s' {sshd_config} > /etc/ssh/sshd_config.d/wsgiapp.conf
systemctl enable ssh.service
rm -rf /tmp/apt.log /tmp/host-ca.crt
apt-get clean
rm -rf /var/lib/apt/lists/*
'''


def fleet_recipe():
    return [FLEET_PACKAGES, SSHD_CONFIG, FLEET_SCRIPT]


def fleet_script():
    return FLEET_SCRIPT.format(packages=' '.join(FLEET_PACKAGES), sshd_config=shlex.quote(SSHD_CONFIG))


def _build_layer(target, lowers, script, what):
    """A layer made by `script`, run as root in a chroot of `lowers` (the layers under it)
    with the host's network: its changes, the overlay's upper directory, are the layer."""
    partial = target.with_name(target.name + '.partial')
    work = target.with_name(target.name + '.work')
    merged = target.with_name(target.name + '.merged')
    for directory in (partial, work, merged):
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir()
    run('mount', '-t', 'overlay', 'overlay', '-o',
        f'lowerdir={":".join(map(str, lowers))},upperdir={partial},workdir={work}', merged)
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
        done = subprocess.run(['chroot', str(merged), '/usr/bin/env', '-i', f'PATH={PATH}', 'HOME=/root',
                               'bash', '-c', script], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f'building {what} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}')
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
    lines, name -> address ('server' means this server's own address). `network` and `host`:
    a launcher.network.Network shared with other machines, and this one's host name in it
    (its address); by default a network of its own, host 'server'. `layers`: the image's top
    layer ('server', or 'fleet' for sshd). `files`: path inside -> (content, mode), written
    into its disk before each boot. `persistent`: its disk outlives a crash (`crash()`, then
    `start()` boots from it); else each start is a fresh server."""

    HOST = 'server'  # launcher/network.py's name for it: address .3 on the bridge

    def __init__(self, directory, hostname='wsgiapp-server', hosts=None, network=None, host=None,
                 layers='server', files=None, persistent=False):
        self.dir = Path(directory).resolve()
        self.ident = hashlib.sha256(str(self.dir).encode()).hexdigest()[:4]
        self.hostname = hostname
        self.hosts = dict(hosts or {})
        self.root = self.dir / 'root'
        self.console = self.dir / 'console.log'
        self.state = self.dir / 'machine.json'
        self.shared = network is not None
        self._network = network
        self.host = host or self.HOST
        # The container's name (its overlay mount's too): a fleet's names say which host it is.
        self.name = f'wsgiapp-{network.ident}-{self.host}' if self.shared else f'wsgiapp-{self.ident}'
        self.layers = layers
        self.files = dict(files or {})
        self.persistent = persistent

    @property
    def network(self):
        if self._network is None:
            self._network = Network(self.ident)
        return self._network

    @property
    def address(self):
        return self.network.address(self.host)

    @property
    def netns(self):
        return self.network.netns(self.host)

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
        layers = image(self.layers)
        self._release()  # whatever a crashed run left, but its disk
        if not self.persistent:
            shutil.rmtree(self.dir, ignore_errors=True)
        started = time.monotonic()
        try:
            for name in ('upper', 'work', 'root'):
                (self.dir / name).mkdir(parents=True, exist_ok=True)
            first_boot = not (self.dir / 'upper' / 'etc' / 'machine-id').exists()
            run('mount', '-t', 'overlay', self.name, '-o',
                f'lowerdir={":".join(map(str, layers))},upperdir={self.dir / "upper"},workdir={self.dir / "work"}',
                self.root)
            self.network.create()
            self.network.add_host(self.host)
            if first_boot:
                write_inside(self.root, '/etc/machine-id', uuid.uuid4().hex + '\n')  # each copy its own
            write_inside(self.root, '/etc/hostname', f'{self.hostname}\n')
            self.write_hosts()
            for path, (content, mode) in self.files.items():
                write_inside(self.root, path, content, mode)
            say(f'booting {self.hostname} ({self.address}) in {self.dir}')
            # nspawn joins its cgroups (the shell's pid is nspawn's after exec), then runs.
            join = ''
            for cgroup in _cgroups(self.name):
                cgroup.mkdir(exist_ok=True)
                join += f'echo $$ > {shlex.quote(str(cgroup / "cgroup.procs"))} && '
            with open(self.console, 'ab') as console:
                nspawn = subprocess.Popen(
                    ['sh', '-c', join + 'exec "$@"', 'sh',
                     binary('systemd-nspawn'), '--quiet', '-D', str(self.root), '-b', '--register=no', '--keep-unit',
                     f'--machine={self.name}', f'--hostname={self.hostname}', '--console=pipe',
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
            if self.persistent:  # its disk is kept, to look into, or to boot again
                self._power_off(quiet=True)
                self._release()
            else:
                self.stop(quiet=True)
            raise
        self.boot_seconds = time.monotonic() - started
        say(f'{self.hostname} is up in {self.boot_seconds:.1f} s')
        return self

    def write_hosts(self):
        """Its /etc/hosts: localhost, its own name, then `hosts` (a running server's too: a fleet
        that grows names its new hosts on the old ones)."""
        hosts = {'localhost': '127.0.0.1', self.hostname: '127.0.1.1',
                 **{name: self.address if address == 'server' else address for name, address in self.hosts.items()}}
        write_inside(self.root, '/etc/hosts', ''.join(f'{address} {name}\n' for name, address in hosts.items()))

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
        self._power_off(quiet)
        self._release()
        shutil.rmtree(self.dir, ignore_errors=True)

    def crash(self):
        """A power loss: SIGKILL its init (every process of it dies with it), until nspawn has
        exited; then its overlay is unmounted and its network link removed, as a dead host's
        (its packets vanish, nothing answers). Its disk, the overlay's upper directory, stays."""
        pid, leader = self.pid, self.leader()
        if pid is None:
            return
        if leader is None:
            raise RuntimeError(f'{self.hostname} has no init to kill (not booted)')
        say(f'crashing {self.hostname} (SIGKILL to its init, pid {leader})')
        with suppress(ProcessLookupError):
            os.kill(leader, signal.SIGKILL)
        wait_for(lambda: not alive(pid), 30, f'systemd-nspawn of {self.hostname} to exit', interval=0.05)
        with suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        self._release()

    def _power_off(self, quiet=False):
        pid = self.pid
        if not pid:
            return
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

    def _release(self):
        """Unmount its overlay and remove its network (on a shared network, its own link only);
        what a powered-off server holds of the host, but its directory."""
        if self.root.exists() and os.path.ismount(self.root):
            if run('umount', self.root, check=False).returncode != 0:
                run('umount', '-l', self.root, check=False)
        if self.shared:
            self.network.remove_host(self.host)
        else:
            self.network.remove()
        for cgroup in _cgroups(self.name):  # empty once its processes are gone: the deepest first
            for directory, _, _ in os.walk(cgroup, topdown=False):
                with suppress(OSError):
                    os.rmdir(directory)
        if self.root.exists() and os.path.ismount(self.root):
            raise RuntimeError(f'{self.root} is still mounted; not removing {self.dir}')

    def leftovers(self):
        """What of this server is still on the host: none after stop()."""
        found = [f'mount {line.split()[2]}' for line in Path('/proc/mounts').read_text().splitlines()
                 if str(self.dir) in line or f'{self.name} ' in line]
        found += self.network.leftovers(self.host if self.shared else None)
        found += [f'pid {pid}' for pid in _nspawns(self.root)]
        found += [f'cgroup {cgroup}' for cgroup in _cgroups(self.name) if cgroup.exists()]
        if self.dir.exists():
            found.append(f'directory {self.dir}')
        return found


def _cgroups(name):
    """The cgroup of a container's nspawn, `name`, in each hierarchy systemd uses (cgroup2; and
    name=systemd on a hybrid host). nspawn --keep-unit builds the container's cgroup tree
    (payload/, supervisor/) in the cgroup it starts in: two containers started from one
    cgroup would share that tree and wreck each other's units."""
    found = []
    for line in Path('/proc/self/mountinfo').read_text().splitlines():
        fields = line.split()
        kind, _, options = fields[fields.index('-') + 1:][:3]
        if kind == 'cgroup2' or (kind == 'cgroup' and 'name=systemd' in options.split(',')):
            found.append(Path(fields[4]) / name)
    return found


def write_inside(root, path, content, mode=0o644):
    """`content` (str or bytes) to `path` inside the server's tree `root`, as root, following
    no symlink and creating missing directories (mode 0700): a kept disk is the server's own,
    and a link made there (/etc/hosts -> /etc/shadow) must not turn a write from here into a
    write to the host's file."""
    data = content.encode() if isinstance(content, str) else content
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in Path(path).relative_to('/').parent.parts:
            with suppress(FileExistsError):
                os.mkdir(part, 0o700, dir_fd=directory)
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
            os.close(directory)
            directory = inner
        name = Path(path).name
        with suppress(FileNotFoundError):
            os.unlink(name, dir_fd=directory)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=directory)
        with os.fdopen(fd, 'wb') as out:
            os.fchmod(fd, mode)  # whatever the umask
            out.write(data)
    finally:
        os.close(directory)


def _nspawns(root):
    pids = []
    for process in psutil.process_iter(['pid', 'cmdline']):
        cmdline = process.info['cmdline'] or []
        if cmdline and 'systemd-nspawn' in cmdline[0] and str(root) in cmdline:
            pids.append(process.pid)
    return pids
