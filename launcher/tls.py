"""Certificates made with openssl for the launcher: a private CA, and server (or client)
certificates it signs. Keys are mode 0600 from creation (openssl writes them with the umask)."""
import os
import ssl
import subprocess
from pathlib import Path

from launcher.process import say


def _openssl(*args):
    old = os.umask(0o077)  # the keys openssl writes are never readable by others, not even for a moment
    try:
        subprocess.run(['openssl', *args], check=True, capture_output=True)
    finally:
        os.umask(old)


class Authority:
    """A CA in `directory` (ca.pem, ca.key), made when it first issues a certificate."""

    def __init__(self, directory, name='wsgiapp private CA'):
        self.dir = Path(directory)
        self.name = name
        self.cert = self.dir / 'ca.pem'
        self.key = self.dir / 'ca.key'
        self._client_context = None

    def client_context(self):
        """A client SSL context that trusts this CA, and only it (made once)."""
        if self._client_context is None:
            self._client_context = ssl.create_default_context(cafile=str(self.cert))
        return self._client_context

    def _make(self):
        if not self.cert.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            say(f'creating a private certificate authority in {self.dir}')
            _openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
                     '-days', '825', '-subj', f'/CN={self.name}', '-keyout', str(self.key), '-out', str(self.cert),
                     '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign')
        # The CA's certificate is public, and whoever checks a peer reads it: uwsgi's app once it
        # dropped root (conf/uwsgi.ini's uid) reads the database CA. Its key stays 0600.
        self.cert.chmod(0o644)

    def issue(self, name, dns=(), ips=(), client=False):
        """(cert, key) paths for `name`, signed by this CA; made once."""
        self._make()
        cert, key = self.dir / f'{name}.pem', self.dir / f'{name}.key'
        if cert.exists() and key.exists():
            return cert, key
        request = self.dir / f'{name}.csr'
        _openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
                 '-subj', f'/CN={name}', '-keyout', str(key), '-out', str(request))
        names = [f'DNS:{d}' for d in dns] + [f'IP:{i}' for i in ips]
        extensions = self.dir / f'{name}.ext'
        extensions.write_text(
            'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n'
            f'extendedKeyUsage={"clientAuth" if client else "serverAuth"}\n'
            + (f'subjectAltName={",".join(names)}\n' if names else ''))
        _openssl('x509', '-req', '-in', str(request), '-CA', str(self.cert), '-CAkey', str(self.key),
                 '-CAcreateserial', '-days', '825', '-sha256', '-extfile', str(extensions), '-out', str(cert))
        request.unlink()
        extensions.unlink()
        return cert, key
