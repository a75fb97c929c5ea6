"""The READY=1 listener: what systemd does for a Type=notify service, for a process the
launcher or a test starts (uwsgi sends READY=1 to $NOTIFY_SOCKET once its app is loaded)."""
import os
import socket
import tempfile

from launcher.wait import TimedOut, wait_for


class ReadyListener:
    """with ReadyListener() as ready: start the process with ready.environ, then ready.wait(process).
    `owner`: a uid that must be able to send too (a process that drops root before READY=1)."""

    def __init__(self, owner=None):
        self.owner = owner

    def __enter__(self):
        self._dir = tempfile.TemporaryDirectory(prefix='wsgiapp-notify-')
        self.path = f'{self._dir.name}/notify'  # short: sun_path holds 108 bytes
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.path)
        if self.owner is not None:
            os.chmod(self._dir.name, 0o711)
            os.chown(self.path, self.owner, -1)
        self._socket.settimeout(0.2)
        self.messages = []
        return self

    def __exit__(self, *exc):
        self._socket.close()
        self._dir.cleanup()

    @property
    def environ(self):
        return {'NOTIFY_SOCKET': self.path}

    def wait(self, process, seconds=30):
        """True once READY=1 arrives; False if `process` (a Popen) exits or `seconds` pass first.
        Every message received is kept in .messages."""

        def ready_or_exited():
            try:
                message = self._socket.recv(4096).decode('utf-8', 'replace')
            except socket.timeout:  # 0.2 s of silence
                return 'exited' if process.poll() is not None else None
            self.messages.append(message)
            return 'ready' if 'READY=1' in message.split('\n') else None
        try:
            return wait_for(ready_or_exited, seconds, 'READY=1', interval=0) == 'ready'
        except TimedOut:
            return False
