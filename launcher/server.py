"""python -m launcher.server up|down|status VAR: a booted Debian 12 server (launcher/machine.py)
with this checkout deployed on it by docs/deploy.rst's steps, run as written, with the real
systemd, certbot, nginx and MariaDB. tests/test_deploy.py deploys through this same code.

What is not on a real server, and what stands in for it here (docs/server.rst):

- the Internet's DNS: the server's /etc/hosts maps the domain to the server's own address;
- Let's Encrypt: pebble, the ACME test server, running on the server as a transient systemd
  unit; certbot finds it through its own configuration file, /etc/letsencrypt/cli.ini
  (`server = ...`), and trusts its TLS certificate through REQUESTS_CA_BUNDLE; pebble's
  root is added to the server's trust store, so that curl trusts the certificate issued;
- the repository: the checkout's working tree (tracked and untracked files, what `git add -A`
  would take), committed into a repository of its own, copied to the server as a git bundle
  (/root/wsgiapp.bundle, which `git clone` takes as the repository's URL);
- PyPI: the image's wheelhouse (PIP_NO_INDEX, PIP_FIND_LINKS), for `make install`."""
import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from launcher.machine import WHEELHOUSE, Machine
from launcher.process import ROOT, say

DOMAIN = 'example.com'
DEPLOY_PAGE = ROOT / 'docs' / 'deploy.rst'
REPOSITORY = '/root/wsgiapp.bundle'
ACME = 'https://localhost:14000/dir'
PEBBLE_CA = '/etc/pebble/ca.pem'  # the CA of pebble's own HTTPS listener
# The environment the deploy steps run with, beside a root login's own.
DEPLOY_ENV = {'PIP_NO_INDEX': '1', 'PIP_FIND_LINKS': WHEELHOUSE, 'PIP_DISABLE_PIP_VERSION_CHECK': '1',
              'REQUESTS_CA_BUNDLE': PEBBLE_CA, 'DEBIAN_FRONTEND': 'noninteractive'}


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


# pebble as Let's Encrypt: its listener's certificate from a CA of its own, HTTP-01
# validation on port 80 of whatever the domain resolves to (the server, through nginx), no
# sleep before validating, nothing assumed valid, no authorization reused (a renewal is
# validated again) and no nonce refused at random (certbot would retry; the test must not
# depend on it). -strict: RFC 8555 as Let's Encrypt enforces it.
PEBBLE = r'''
set -euo pipefail
umask 077
install -d -m 0755 /etc/pebble
cd /etc/pebble
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj '/CN=pebble listener CA' -keyout ca.key -out ca.pem \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
    -keyout key.pem -out listener.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > listener.ext
openssl x509 -req -in listener.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -extfile listener.ext \
    -out cert.pem 2>/dev/null
chmod 644 ca.pem cert.pem
cat > pebble.json <<'JSON'
{"pebble": {"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
            "certificate": "/etc/pebble/cert.pem", "privateKey": "/etc/pebble/key.pem",
            "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": false}}
JSON
systemd-run --unit=pebble --description='pebble, the ACME test server (Let'"'"'s Encrypt here)' \
    -E PEBBLE_VA_NOSLEEP=1 -E PEBBLE_VA_ALWAYS_VALID=0 -E PEBBLE_AUTHZREUSE=0 -E PEBBLE_WFE_NONCEREJECT=0 \
    /usr/bin/pebble -config /etc/pebble/pebble.json -strict
for i in $(seq 100); do curl -sf --cacert ca.pem https://localhost:15000/roots/0 -o /dev/null && break; sleep 0.1; done
# The roots a browser would have for Let's Encrypt: pebble's, for curl and the tests.
curl -sSf --cacert ca.pem https://localhost:15000/roots/0 -o /usr/local/share/ca-certificates/pebble-root.crt
chmod 644 /usr/local/share/ca-certificates/pebble-root.crt
update-ca-certificates > /dev/null
install -d -m 0755 /etc/letsencrypt
printf 'server = {acme}\n' > /etc/letsencrypt/cli.ini
chmod 644 /etc/letsencrypt/cli.ini
'''


def snapshot(source, bundle):
    """The working tree of `source` (tracked and untracked files, not the ignored ones) as
    the one commit of a new repository, in the git bundle `bundle`, made with git on the host."""
    files = subprocess.run(['git', '-C', str(source), 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                           check=True, capture_output=True).stdout.decode().split('\0')
    with tempfile.TemporaryDirectory(prefix='wsgiapp-snapshot-') as work:
        for name in filter(None, files):
            path = Path(source) / name
            if path.is_file() or path.is_symlink():
                (Path(work) / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, Path(work) / name, follow_symlinks=False)
        git = ['git', '-C', work, '-c', 'user.name=wsgiapp', '-c', 'user.email=wsgiapp@localhost']
        subprocess.run([*git, 'init', '-q', '-b', 'main'], check=True)
        subprocess.run([*git, 'add', '-A'], check=True)
        subprocess.run([*git, 'commit', '-q', '-m', f'working tree of {source}'], check=True)
        subprocess.run([*git, 'bundle', 'create', '-q', str(bundle), '--all'], check=True, capture_output=True)


def prepare(machine, source=ROOT, domain=DOMAIN):
    """What the deploy steps expect of a server and of the world around it (above)."""
    say(f'preparing {machine.hostname}: pebble as the ACME server, the checkout at {REPOSITORY}')
    machine.run(PEBBLE.replace('{acme}', ACME))
    with tempfile.TemporaryDirectory(prefix='wsgiapp-bundle-') as work:
        snapshot(source, Path(work) / 'wsgiapp.bundle')
        machine.copy_in(Path(work) / 'wsgiapp.bundle', REPOSITORY, mode=0o600)


def deploy_script(domain=DOMAIN):
    """docs/deploy.rst's commands, as written (the repository's URL and the domain filled in)."""
    commands = '\n'.join(deploy_commands()).replace('<repository-url>', REPOSITORY)
    commands = re.sub(r'^DOMAIN=\S+$', f'DOMAIN={domain}', commands, count=1, flags=re.M)
    # Each step traced with the server's uptime in seconds, for the deploy log's timings.
    return ('set -euo pipefail\ncd /root\nPS4=\'+ [$(cut -d" " -f1 /proc/uptime)] \'\nset -x\n'
            + commands + '\n')


def deploy(machine, source=ROOT, domain=DOMAIN):
    """Prepare, then run the deploy steps in bash as root on the server; the CompletedProcess
    (check it: a failed step is the caller's to report) and the seconds taken."""
    prepare(machine, source, domain)
    say(f'deploying {source} on {machine.hostname} with docs/deploy.rst, step by step')
    started = time.monotonic()
    done = machine.run(deploy_script(domain), env=DEPLOY_ENV, check=False, timeout=1200)
    return done, time.monotonic() - started


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m launcher.server', description=__doc__.split('\n\n')[0])
    parser.add_argument('action', choices=['up', 'down', 'status'])
    parser.add_argument('var', type=Path, help='the server state directory (its overlay, console log)')
    args = parser.parse_args(argv)
    machine = Machine(args.var, hosts={DOMAIN: 'server'})
    if args.action == 'down':
        machine.stop()
        left = machine.leftovers()
        if left:
            print(f'left behind: {left}', file=sys.stderr)
            return 1
        return 0
    if args.action == 'status':
        print(f'{machine.hostname}: running at {machine.address}' if machine.pid else 'not running')
        return 0 if machine.pid else 3
    import os
    if os.geteuid() != 0 or not shutil.which('systemd-nspawn'):
        print('make server needs root and systemd-nspawn (apt-get install systemd-container)', file=sys.stderr)
        return 1
    if machine.pid:
        print(f'already running: https://{DOMAIN}/ at {machine.address}')
        return 0
    try:
        machine.start()
        done, seconds = deploy(machine)
    except BaseException:
        machine.stop(quiet=True)
        raise
    (machine.dir / 'deploy.log').write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        print(f'the deploy failed; the server is left running to look into (nsenter -t {machine.leader()} -a '
              f'bash -l; remove it with make server-stop). The steps\' output: {machine.dir / "deploy.log"}:\n'
              f'{done.stderr[-4000:]}', file=sys.stderr)
        return 1
    ca = machine.dir / 'pebble-root.pem'
    shutil.copy(machine.root / 'usr/local/share/ca-certificates/pebble-root.crt', ca)
    say(f'deployed in {seconds:.0f} s; the site: https://{DOMAIN}/ at {machine.address} '
        f'(pebble\'s root: {ca})')
    print(f'https://{DOMAIN}/  curl --cacert {ca} --resolve {DOMAIN}:443:{machine.address} https://{DOMAIN}/admins')
    print(f'a shell on it: nsenter -t {machine.leader()} -a bash -l')
    return 0


if __name__ == '__main__':
    sys.exit(main())
