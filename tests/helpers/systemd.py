"""The systemd unit as tests/test_systemd.py reads it, to run uwsgi under the unit's
settings without systemd (tests/test_server.py checks the same unit under real systemd)."""
import os
import shlex
import socket
import struct

from launcher import notify


def unit_settings(path):
    """[Service] of a unit file as (key, value) pairs, in order (a key may repeat)."""
    pairs, section = [], None
    with open(path) as unit:
        for line in unit:
            line = line.strip()
            if line.startswith('['):
                section = line
            elif section == '[Service]' and line and not line.startswith(('#', ';')):
                key, _, value = line.partition('=')
                pairs.append((key, value))
    return pairs


def read_env_file(path):
    """The variables of an EnvironmentFile=, by systemd's rules: wsgiapp.envfile.read_env_file."""
    from wsgiapp.envfile import read_env_file
    return read_env_file(path)[0]


def unit_environment(settings, local=lambda value: value, env_file=read_env_file):
    """The environment the unit's settings give its process: each EnvironmentFile= (read by
    `env_file`; one named with a leading '-' may be missing), then each Environment=, in
    order. `local` maps the unit's production paths to the test's own."""
    environ = {}
    for key, value in settings:
        if key == 'EnvironmentFile':
            path = local(value.removeprefix('-'))
            if value.startswith('-') and not os.path.exists(path):
                continue
            environ.update(env_file(path))
        elif key == 'Environment':
            environ.update(item.split('=', 1) for item in shlex.split(local(value)))
    return environ


class _Credentials:
    """A datagram socket whose recv() also notes each sender's pid (SCM_CREDENTIALS)."""

    def __init__(self, sock, senders):
        self._socket, self._senders = sock, senders

    def recv(self, size):
        data, ancillary, _, _ = self._socket.recvmsg(size, socket.CMSG_SPACE(12))
        self._senders.append(next((struct.unpack('iII', cdata)[0] for level, kind, cdata in ancillary
                                   if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), None))
        return data

    def __getattr__(self, name):
        return getattr(self._socket, name)


class ReadyListener(notify.ReadyListener):
    """launcher.notify.ReadyListener that also knows who sent each message (.senders, one pid
    per .messages entry), as systemd does to apply NotifyAccess=main."""

    def __enter__(self):
        super().__enter__()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.senders = []
        self._socket = _Credentials(self._socket, self.senders)
        return self
