"""The manual's "Deploying on a server" (docs/deploy.rst), run exactly as written.

The commands are taken from that page itself (every `.. code-block:: sh` of its first
section), so the two cannot drift, and run by bash as root in a sandbox that looks like a
fresh Debian 12 server with MariaDB and nginx installed: a private copy of /etc (users,
nginx's configuration with Debian's default site, MariaDB's), empty /srv and /run, a fresh
MariaDB data directory made and started as Debian does, and Debian's nginx running its
default site. Servers listen in a network namespace of the sandbox's own, so ports 80, 443
and 3306 are private to it. systemd, Let's Encrypt and the sandbox's network are not
there: tests/deploy/ has stand-ins for `systemctl` (it starts the unit's ExecStart as the
unit's user, environment file and hardening, and waits for READY=1 as Type=notify does),
`certbot` (a real HTTP-01 check through nginx, then a certificate from a stand-in CA) and
`curl` (the real one, inside the namespace). Everything runs in its own mount and PID
namespaces: when the script ends, every process it started ends with it, and nothing on
the host has changed. The checkout deployed is a clone of this one's HEAD.
"""
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from launcher.process import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]
STAND_INS = ROOT / 'tests' / 'deploy'
DEPLOY_PAGE = ROOT / 'docs' / 'deploy.rst'


def deploy_commands():
    """Every `.. code-block:: sh` from the page's title to its next section title."""
    text = DEPLOY_PAGE.read_text()
    section = text[text.index('Deploying on a server\n'):]
    section = section[:re.search(r'\n\n[^\n]+\n-{3,}\n', section[30:]).start() + 30]
    blocks, lines = [], section.splitlines()
    for number, line in enumerate(lines):
        if line.strip() == '.. code-block:: sh':
            indent = len(line) - len(line.lstrip())
            block = []
            for body in lines[number + 1:]:
                if body.strip() and len(body) - len(body.lstrip()) <= indent:
                    break
                block.append(body)
            blocks.append('\n'.join(block).strip('\n'))
    return blocks


# A fresh Debian 12 server with mariadb-server and nginx installed, as their packages leave
# it: MariaDB initialised and running, nginx running Debian's default site.
SANDBOX = r'''
set -euo pipefail
umask 022
S="$SANDBOX"
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p "$S/etc" && cp -a /etc/. "$S/etc/" && mount --bind "$S/etc" /etc
for dir in /srv /var/www /var/lib/nginx /var/log/nginx /var/lib/mysql; do
    mkdir -p "$S/fs$dir"
    case $dir in /var/www|/var/lib/nginx) cp -a "$dir/." "$S/fs$dir/";; esac
    mount --bind "$S/fs$dir" "$dir"
done
chown mysql:mysql /var/lib/mysql
test -e /etc/nginx/sites-enabled/default || ln -s /etc/nginx/sites-available/default /etc/nginx/sites-enabled/default
echo "127.0.0.1 example.com" >> /etc/hosts
ip netns add "$DEPLOY_NETNS"
ip netns exec "$DEPLOY_NETNS" ip link set lo up
export PATH="$STAND_INS:$PATH"
mariadb-install-db --user=mysql --skip-test-db > /run/mariadb-install-db.log 2>&1
systemctl start mariadb
systemctl start nginx
cd /root 2>/dev/null || cd /
echo '==> docs/deploy.rst from here'
set -x
'''


def test_deploy_commands_are_extracted():
    blocks = deploy_commands()
    joined = '\n'.join(blocks)
    for expected in ('adduser --system', 'make install', 'wsgiapp initdb', 'GRANT SELECT, INSERT, UPDATE, DELETE',
                     'systemctl enable --now wsgiapp', 'certbot certonly', 'rm -f /etc/nginx/sites-enabled/default',
                     'wsgiapp check', 'curl'):
        assert expected in joined
    # The GRANT on the table comes after initdb has created it.
    assert joined.index('wsgiapp initdb') < joined.index('GRANT SELECT')


def test_the_deploy_steps_work_as_written():
    if os.geteuid() != 0 or not shutil.which('unshare') or not shutil.which('ip'):
        pytest.skip('the deploy test needs root (namespaces, users, a copy of /etc)')
    sandbox = Path(tempfile.mkdtemp(prefix='wsgiapp-deploy-', dir='/var/tmp'))
    sandbox.chmod(0o755)  # the app's user must reach /srv inside it, as on a server
    script = SANDBOX + '\n'.join(deploy_commands()).replace('<repository-url>', str(ROOT))
    environ = {**os.environ, 'SANDBOX': str(sandbox), 'STAND_INS': str(STAND_INS),
               'DEPLOY_NETNS': f'wsgiapp-deploy-{uuid.uuid4().hex[:6]}'}
    environ.pop('DATABASE_URL', None)
    environ.pop('VIRTUAL_ENV', None)
    environ['PATH'] = ':'.join(p for p in environ['PATH'].split(':') if '.venv' not in p)
    host_files = {path: Path(path).read_bytes() for path in ('/etc/passwd', '/etc/group', '/etc/hosts')}
    try:
        done = subprocess.run(['unshare', '--mount', '--pid', '--fork', '--mount-proc', '--propagation', 'private',
                               'bash', '-c', script], env=environ, capture_output=True, text=True, timeout=900)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-6000:]
        assert 'all checks passed' in done.stdout, output[-6000:]
        assert '<h1>admins</h1>' in done.stdout and '<table>' not in done.stdout  # the new table is empty
        assert 'HTTP-01 challenge for example.com answered' in done.stdout  # renewals go through the site
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)
    # Nothing of the sandbox is left on the host: no user, group, host name or namespace.
    assert {path: Path(path).read_bytes() for path in host_files} == host_files
    assert environ['DEPLOY_NETNS'] not in subprocess.run(['ip', 'netns', 'list'], capture_output=True,
                                                         text=True).stdout
