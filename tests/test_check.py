"""`python -m wsgiapp check` names the fix for each classic fault of the seed post."""
import argparse
import grp
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest

from launcher.process import ROOT
from wsgiapp import check, envfile

SITE = ROOT / 'conf' / 'nginx' / 'wsgiapp.conf'
WWW_DATA = 33  # Debian's nginx user
OTHER_UID = 1234  # no such user: a checkout that belongs to someone else
as_root = pytest.mark.skipif(os.geteuid() != 0, reason='needs root to hand files to other users')

# Debian's /etc/nginx/sites-available/default, without its comments.
DEBIAN_DEFAULT_SITE = """server {
\tlisten 80 default_server;
\tlisten [::]:80 default_server;
\troot /var/www/html;
\tindex index.html index.htm index.nginx-debian.html;
\tserver_name _;
\tlocation / {
\t\ttry_files $uri $uri/ =404;
\t}
}
"""


def run(tmp_path, environ, ini=ROOT / 'conf' / 'uwsgi.ini', sock=None, site=SITE, nginx_user='root', args=()):
    """(exit status, output) of the check, on nothing of this machine's unless passed in."""
    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    args = parser.parse_args(['--ini', str(ini), '--nginx-conf', str(site), '--nginx-user', nginx_user,
                              '--socket', str(sock or tmp_path / 'missing.sock'), '--env-file', '',
                              '--nginx-sites-enabled', str(tmp_path / 'no-sites-enabled'), *map(str, args)])
    lines = []
    status = check.main(args, environ={'WSGIAPP_RUN_DIR': str(tmp_path / 'run'), **environ}, out=lines.append)
    return status, '\n'.join(lines)


def line_of(output, words):
    """The one FAIL or ok line (with its fix) that contains `words`."""
    found = [line for line in output.replace('\n      fix:', '  fix:').splitlines() if words in line]
    assert len(found) == 1, output
    return found[0]


def as_user(uid, function):
    """function()'s JSON-able result, computed in a child process running as `uid` with that
    user's groups: the kernel, not root's privileges, decides what it may open."""
    user = pwd.getpwuid(uid)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        status = 1
        try:
            os.setgroups([g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem])
            os.setgid(user.pw_gid)
            os.setuid(uid)
            os.write(write, json.dumps(function()).encode())
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as result:
        data = result.read()
    assert os.waitpid(pid, 0)[1] == 0
    return json.loads(data)


def listen(path):
    """A real listening unix socket, like uwsgi's."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    return server


@pytest.fixture
def listening(tmp_path):
    server = listen(tmp_path / 'uwsgi.sock')
    yield tmp_path / 'uwsgi.sock'
    server.close()


@pytest.fixture
def public_dir():
    """A directory anyone may enter, as /srv is (pytest's tmp_path is under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix='wsgiapp-check-', dir='/tmp'))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


# uwsgi's config and socket

def test_ini_without_uwsgi_header(tmp_path):
    ini = tmp_path / 'config.ini'
    ini.write_text('socket = /tmp/my.sock\nchmod-socket = 666\nmaster = true\n')
    status, output = run(tmp_path, {}, ini=ini)
    assert status == 1
    assert 'does not start with the [uwsgi] section header' in output and 'add a line "[uwsgi]"' in output
    assert 'chmod-socket = 666' in output


def test_shipped_ini_passes(tmp_path):
    assert 'has its [uwsgi] header' in run(tmp_path, {})[1]


def test_socket_missing(tmp_path):
    output = run(tmp_path, {})[1]
    assert 'does not exist (nginx would answer 502)' in output and 'fix: start uwsgi' in output


def test_stale_socket_file_refuses(tmp_path):
    path = tmp_path / 'stale.sock'
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the file stays, nobody listens: uwsgi was killed without vacuum
    output = run(tmp_path, {}, sock=path)[1]
    assert 'refuses connections' in output


@as_root
def test_socket_nginx_cannot_connect_to(tmp_path, listening):
    os.chmod(listening, 0o600)  # root only: www-data may not connect
    output = run(tmp_path, {}, sock=listening, nginx_user='www-data')[1]
    assert 'nginx user www-data may not connect' in output and 'chmod-socket = 660' in output
    os.chown(listening, 0, grp.getgrnam('www-data').gr_gid)
    os.chmod(listening, 0o660)
    assert 'nginx user www-data may connect' in run(tmp_path, {}, sock=listening, nginx_user='www-data')[1]


def test_world_writable_socket(tmp_path, listening):
    os.chmod(listening, 0o666)
    assert 'world-writable' in run(tmp_path, {}, sock=listening)[1]


# The socket's group and uwsgi's user

@as_root
def test_socket_group_shared_with_other_users_is_named(tmp_path, listening):
    nogroup = grp.getgrnam('nogroup').gr_gid
    sharing = sorted({u.pw_name for u in pwd.getpwall() if u.pw_gid == nogroup} - {'root', 'www-data'})
    assert sharing  # Debian: nobody, and more
    os.chown(listening, 0, nogroup)
    os.chmod(listening, 0o660)
    line = line_of(run(tmp_path, {}, sock=listening, nginx_user='www-data')[1], "socket's group")
    assert line.startswith('FAIL') and ', '.join(sharing) in line
    assert 'groupadd wsgiapp-sock && adduser www-data wsgiapp-sock' in line


@as_root
def test_socket_group_may_hold_nginx_and_the_socket_owner_only(tmp_path, listening):
    os.chown(listening, 0, grp.getgrnam('www-data').gr_gid)  # www-data is the only member
    os.chmod(listening, 0o660)
    line = line_of(run(tmp_path, {}, sock=listening, nginx_user='www-data')[1], "socket's group")
    assert line.startswith('ok') and 'no members besides' in line
    nobody = pwd.getpwnam('nobody')
    os.chown(listening, nobody.pw_uid, nobody.pw_gid)  # the owner, uwsgi's user, may be in it
    line = line_of(run(tmp_path, {}, sock=listening, nginx_user='www-data')[1], "socket's group")
    assert 'nobody' not in line.split(':')[1]
    os.chmod(listening, 0o600)  # the group may not connect at all: its members do not matter
    assert "socket's group" not in run(tmp_path, {}, sock=listening, nginx_user='www-data')[1]


def test_uwsgi_running_as_root_fails_even_for_a_private_stack(tmp_path):
    pidfile = tmp_path / 'uwsgi.pid'
    pidfile.write_text(f'{os.getpid()}\n')  # a process whose user is ours: root when the suite is root
    output = run(tmp_path, {}, args=['--pidfile', pidfile])[1]
    if os.geteuid() != 0:
        assert f'runs as {pwd.getpwuid(os.geteuid()).pw_name}, not root' in output
        return
    line = line_of(output, 'runs as root')
    assert line.startswith('FAIL') and 'User=wsgiapp' in line
    # No exemption for a private stack: make run's uwsgi drops root too.
    line = line_of(run(tmp_path, {}, args=['--pidfile', pidfile, '--private-stack'])[1], 'runs as root')
    assert line.startswith('FAIL')


@as_root
@pytest.mark.parametrize('worker_user, verdict', [('nobody', 'ok'), ('root', 'FAIL')])
def test_a_root_master_passes_only_if_every_worker_it_forked_is_not_root(tmp_path, worker_user, verdict):
    """master-as-root (conf/uwsgi.ini): the master keeps root to reload, its workers serve."""
    uid = pwd.getpwnam(worker_user).pw_uid
    master = subprocess.Popen([sys.executable, '-c', f'import os, time\nif os.fork() == 0:\n    os.setgid({uid})\n'
                               f'    os.setuid({uid})\ntime.sleep(60)'])
    try:
        from launcher import procs
        from launcher.wait import wait_for
        wait_for(lambda: procs.children(master.pid), 10, 'the forked worker')
        (tmp_path / 'uwsgi.pid').write_text(str(master.pid))
        output = run(tmp_path, {}, args=['--pidfile', tmp_path / 'uwsgi.pid'])[1]
        line = line_of(output, f'(pid {master.pid})')
        assert line.startswith(verdict), line
        if verdict == 'ok':
            assert "uwsgi's workers" in line and 'run as nobody, not root' in line
    finally:
        for child in procs.children(master.pid):
            child.kill()
        master.kill()
        master.wait()


@as_root
def test_uwsgi_running_as_its_own_user_passes(tmp_path):
    sleeper = subprocess.Popen(['sleep', '60'], user='nobody')
    try:
        (tmp_path / 'uwsgi.pid').write_text(str(sleeper.pid))
        output = run(tmp_path, {}, args=['--pidfile', tmp_path / 'uwsgi.pid'])[1]
        assert f'ok    uwsgi (pid {sleeper.pid}) runs as nobody, not root' in output
    finally:
        sleeper.kill()
        sleeper.wait()


def test_uwsgi_pid_file_stale_or_missing(tmp_path):
    gone = subprocess.Popen(['true'])
    gone.wait()  # its pid names no process now: uwsgi was killed without vacuum
    (tmp_path / 'uwsgi.pid').write_text(f'{gone.pid}\n')
    output = run(tmp_path, {}, args=['--pidfile', tmp_path / 'uwsgi.pid'])[1]
    assert 'which is not running' in line_of(output, 'uwsgi pid file')
    output = run(tmp_path, {}, args=['--pidfile', tmp_path / 'absent.pid'])[1]
    assert line_of(output, 'absent.pid').startswith('FAIL')
    # The default place, $WSGIAPP_RUN_DIR/uwsgi.pid, may be empty: then it is only said.
    assert line_of(run(tmp_path, {})[1], 'no uwsgi pid file at').startswith('ok')


# nginx

def test_nginx_site_without_uwsgi_params(tmp_path):
    site = tmp_path / 'site.conf'
    site.write_text('server {\n  location / {\n    # include uwsgi_params;\n'
                    '    uwsgi_pass unix:/tmp/my.sock;\n  }\n}\n')
    output = run(tmp_path, {}, site=site)[1]
    assert 'does not include uwsgi_params' in output and 'add "include uwsgi_params;"' in output
    assert 'includes uwsgi_params' in run(tmp_path, {})[1]


def sites(tmp_path, ours=SITE, **files):
    """A sites-enabled directory holding our site (as `wsgiapp`) and `files`."""
    enabled = tmp_path / 'sites-enabled'
    enabled.mkdir(exist_ok=True)
    (enabled / 'wsgiapp').symlink_to(ours)  # linked, as on Debian: never compared with itself
    for name, text in files.items():
        (enabled / name).write_text(text)
    return ['--nginx-sites-enabled', enabled, '--nginx-conf', enabled / 'wsgiapp']


def test_debians_default_site_on_the_same_port_fails(tmp_path):
    output = run(tmp_path, {}, args=sites(tmp_path, default=DEBIAN_DEFAULT_SITE))[1]
    line = line_of(output, "nginx's default site")
    assert line.startswith('FAIL') and 'also answers port 80' in line and "nginx's welcome page" in line
    assert f'fix: rm {tmp_path}/sites-enabled/default && nginx -t && systemctl reload nginx' in line


def test_default_site_on_another_port_is_no_conflict(tmp_path):
    other = DEBIAN_DEFAULT_SITE.replace(':80', ':8080').replace('listen 80', 'listen 127.0.0.1:8080')
    output = run(tmp_path, {}, args=sites(tmp_path, default=other))[1]
    assert "nginx's default site" not in output
    assert 'ok    no other site in' in output and 'answers port 80, 443 before wsgiapp' in output


@pytest.mark.parametrize('name, text, conflict', [
    # Without default_server anywhere, the first site loaded (by name) is the port's default.
    ('aaa', 'server { listen 80; server_name shop.example; }', True),
    ('zzz', 'server { listen 80; server_name shop.example; }', False),
    ('zzz', 'server { listen [::]:80 default_server; server_name shop.example; }', True),
    ('zzz', 'server { listen unix:/run/other.sock default_server; }', False),
    ('zzz', 'server { server_name _; }', False),  # no listen: port 80, loaded after ours
    ('.hidden', DEBIAN_DEFAULT_SITE, False),  # nginx's include glob skips it
])
def test_which_other_site_takes_the_port(tmp_path, name, text, conflict):
    output = run(tmp_path, {}, args=sites(tmp_path, **{name: text}))[1]
    assert ("nginx's default site" in output) == conflict


def test_our_own_default_server_is_no_rival_of_itself(tmp_path):
    ours = tmp_path / 'wsgiapp.conf'
    ours.write_text(SITE.read_text().replace('listen 80;', 'listen 80 default_server;'))
    rival = DEBIAN_DEFAULT_SITE.replace(' default_server', '')  # loads after ours: ours is the default
    output = run(tmp_path, {}, args=sites(tmp_path, ours=ours, zzz=rival))[1]
    assert 'ok    no other site in' in output and "nginx's default site" not in output


# nginx's user reaching the socket and the static files

def tree(base):
    """base/app/conf/static with two files, and base/app/run with a listening socket."""
    static = base / 'app' / 'conf' / 'static'
    static.mkdir(parents=True)
    (static / 'style.css').write_text('body {}')
    (static / 'robots.txt').write_text('')
    (base / 'app' / 'run').mkdir()
    return static, base / 'app' / 'run' / 'uwsgi.sock'


def reach(tmp_path, sock, static_args):
    return run(tmp_path, {}, sock=sock, nginx_user='www-data', args=static_args)[1]


@as_root
def test_everything_reachable_passes(tmp_path, public_dir):
    static, sock = tree(public_dir)
    with listen(sock):
        output = reach(tmp_path, sock, ['--static-root', static])
    assert f'ok    nginx user www-data may reach the uwsgi socket {sock} and the static files in {static}' in output


@as_root
def test_a_private_temporary_directory_is_named_with_owner_mode_and_fix(tmp_path):
    base = Path(tempfile.mkdtemp(dir='/tmp'))  # what `mktemp -d` makes: root's, mode 700
    try:
        static, sock = tree(base)
        with listen(sock):
            output = reach(tmp_path, sock, ['--static-root', static])
    finally:
        shutil.rmtree(base)
    line = line_of(output, 'may not enter')
    assert line.startswith(f'FAIL  nginx user www-data may not enter {base} (owner root:root, mode 700)')
    assert f'the uwsgi socket {sock} (nginx answers 502)' in line and f'the static files in {static}' in line
    assert 'such as /srv/wsgiapp and /run/wsgiapp' in line and f'chmod o+x {base}' in line


@as_root
@pytest.mark.parametrize('uid, gid, mode', [
    (OTHER_UID, OTHER_UID, 0o700), (OTHER_UID, OTHER_UID, 0o701), (OTHER_UID, OTHER_UID, 0o750),
    (OTHER_UID, WWW_DATA, 0o710), (OTHER_UID, WWW_DATA, 0o701), (WWW_DATA, OTHER_UID, 0o077),
    (WWW_DATA, OTHER_UID, 0o500), (0, 0, 0o711),
])
def test_reach_follows_the_kernels_rule(tmp_path, public_dir, uid, gid, mode):
    """The verdict for each owner and mode is what the kernel does for www-data: only the
    first class that applies (owner, group, others) counts."""
    static, sock = tree(public_dir)
    app = public_dir / 'app'
    os.chown(app, uid, gid)
    app.chmod(mode)
    kernel_says = as_user(WWW_DATA, lambda: os.access(static / 'style.css', os.R_OK))
    with listen(sock):
        output = reach(tmp_path, sock, ['--static-root', static])
    assert ('may not enter' not in output) == kernel_says
    if not kernel_says:
        owner = f'{pwd.getpwuid(uid).pw_name if uid != OTHER_UID else uid}:' \
                f'{grp.getgrgid(gid).gr_name if gid != OTHER_UID else gid}'
        assert f'may not enter {app} (owner {owner}, mode {mode:o})' in output


@as_root
def test_unreadable_static_file_and_alias_from_the_site(tmp_path, public_dir):
    static, sock = tree(public_dir)
    os.chown(static / 'style.css', OTHER_UID, OTHER_UID)
    (static / 'style.css').chmod(0o600)
    site = tmp_path / 'site.conf'
    site.write_text(f'server {{ listen 80;\n  location /static/ {{ alias {static}/; }}\n'
                    f'  location = /robots.txt {{ alias {static}/robots.txt; }}\n'
                    '  location / { include uwsgi_params; uwsgi_pass unix:%s; } }\n' % sock)
    with listen(sock):
        output = run(tmp_path, {}, sock=sock, site=site, nginx_user='www-data')[1]
    line = line_of(output, 'may not read')
    assert f'may not read 1 static file(s) in {static}, such as {static}/style.css (owner 1234:1234, mode 600)' \
        in line and f'fix: chmod -R a+rX {static}' in line


def test_missing_static_root_is_named(tmp_path):
    if os.path.exists('/srv/wsgiapp/conf/static'):
        pytest.skip('wsgiapp is deployed here')
    output = run(tmp_path, {})[1]  # the shipped site serves /srv/wsgiapp/conf/static
    line = line_of(output, 'nginx serves static files from')
    assert line.startswith('FAIL  nginx serves static files from /srv/wsgiapp/conf/static, which does not exist')


# The environment file

@pytest.mark.parametrize('line, value', [
    ('KEY=plain', 'plain'), ('  KEY = spaced  ', 'spaced'), ('KEY="double quoted"', 'double quoted'),
    ("KEY='single \"quoted\"'", 'single "quoted"'), (r'KEY="a\"b\\c\$d"', 'a"b\\c$d'),
    (r'KEY=back\slash', 'backslash'), ('KEY=', ''), ('KEY=has # no comment', 'has # no comment'),
    ('KEY=mysql://u:p%40ss@h/d', 'mysql://u:p%40ss@h/d'), ('KEY=a=b', 'a=b'),
])
def test_env_file_values_as_systemd_reads_them(tmp_path, line, value):
    path = tmp_path / 'env'
    path.write_text(f'# a comment\n; another\n\n{line}\n')
    assert envfile.read_env_file(path) == ({'KEY': value}, [])


def test_env_file_lines_systemd_skips_are_problems(tmp_path):
    path = tmp_path / 'env'
    path.write_text('export DATABASE_URL=mysql://u:p@h/d\nWSGIAPP_API_TOKEN\n1BAD=x\nGOOD=1\n')
    assert envfile.read_env_file(path) == ({'GOOD': '1'}, [
        'line 1 is not KEY=VALUE ("export" is shell, not systemd)', 'line 2 is not KEY=VALUE',
        'line 3 is not KEY=VALUE'])
    output = run(tmp_path, {}, args=['--env-file', path])[1]
    line = line_of(output, 'line 1')
    assert line.startswith(f'FAIL  environment file {path}: line 1') and 'without "export"' in line


def test_env_file_overrides_the_environment(tmp_path, database_url, admin_kwargs):  # admin_kwargs: the table
    path = tmp_path / 'env'
    path.write_text(f'# /etc/wsgiapp/env\nDATABASE_URL="{database_url}"\nWSGIAPP_POOL_SIZE=4\n')
    environ = {'DATABASE_URL': 'mysql://u:p@h:port/d', 'WSGIAPP_POOL_SIZE': 'abc'}
    status, output = run(tmp_path, environ, args=['--env-file', path])
    assert f'ok    read 2 variables from {path}' in output
    assert 'DATABASE_URL connects and vc_admin and idempotency_key and failed_token exist' in output
    assert 'WSGIAPP_POOL_SIZE' not in output
    assert 'WSGIAPP_POOL_SIZE must be' in run(tmp_path, environ)[1]  # without the file


def test_env_file_defaults_to_etc_wsgiapp_env_when_it_exists(tmp_path, monkeypatch):
    path = tmp_path / 'env'
    path.write_text('WSGIAPP_POOL_SIZE=abc\n')
    monkeypatch.setattr(check, 'DEFAULT_ENV_FILE', str(path))
    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    lines = []
    check.main(parser.parse_args(['--socket', str(tmp_path / 'none.sock')]), environ={}, out=lines.append)
    assert f'read 1 variables from {path}' in lines[0] and 'WSGIAPP_POOL_SIZE must be' in '\n'.join(lines)
    monkeypatch.setattr(check, 'DEFAULT_ENV_FILE', str(tmp_path / 'absent'))
    lines = []
    check.main(parser.parse_args(['--socket', str(tmp_path / 'none.sock')]), environ={}, out=lines.append)
    assert lines[0].startswith("ok    no environment file: checking this process's environment")


@as_root
def test_env_file_unreadable_names_the_file_and_sudo(tmp_path):
    path = tmp_path / 'env'
    path.write_text('DATABASE_URL=mysql://u:topsecret@h/d\n')
    path.chmod(0o600)  # root's, as in production
    status, output = as_user(pwd.getpwnam('nobody').pw_uid, lambda: run(tmp_path, {}, args=['--env-file', path]))
    assert status == 1
    line = line_of(output, 'environment file')
    assert line.startswith(f'FAIL  environment file {path} is not readable') and 'sudo' in line
    assert 'topsecret' not in output


# Settings and the database

def test_malformed_numbers_are_each_a_fail_line(tmp_path):
    status, output = run(tmp_path, {'WSGIAPP_POOL_SIZE': 'abc', 'WSGIAPP_MAX_BODY': '1'})
    assert status == 1
    assert line_of(output, 'WSGIAPP_POOL_SIZE').startswith('FAIL  WSGIAPP_POOL_SIZE must be a number from 1 to 1000')
    assert line_of(output, 'WSGIAPP_MAX_BODY').startswith('FAIL  WSGIAPP_MAX_BODY must be a number')
    assert 'DATABASE_URL is not set' in output  # the rest is still checked


def test_the_command_never_ends_in_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, '-m', 'wsgiapp', 'check', '--env-file', '', '--socket', str(tmp_path / 's')],
                          env={**os.environ, 'WSGIAPP_POOL_SIZE': 'abc', 'DATABASE_URL': 'mysql://u:top[secret@h/d'},
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1 and done.stderr == ''
    assert 'FAIL  WSGIAPP_POOL_SIZE' in done.stdout and 'FAIL  DATABASE_URL' in done.stdout


def test_an_unexpected_error_is_a_fail_line(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError('the ini parser broke')
    monkeypatch.setattr(check, 'check_ini', broken)
    status, output = run(tmp_path, {})
    assert status == 1
    assert 'FAIL  the check itself failed: RuntimeError: the ini parser broke' in output
    assert output.endswith('problem(s) found')


def test_database_url_unset_or_malformed(tmp_path):
    assert 'DATABASE_URL is not set' in run(tmp_path, {})[1]
    output = run(tmp_path, {'DATABASE_URL': 'mysql://u:secret-pw@h:port/d'})[1]
    assert 'DATABASE_URL' in output and 'secret-pw' not in output
    line = line_of(run(tmp_path, {'DATABASE_URL': 'mysql://u:secret#pw@h/d'})[1], 'DATABASE_URL')
    assert line.startswith('FAIL  DATABASE_URL') and "quote(password, safe='')" in line
    assert "print(urllib.parse.quote(sys.argv[1], safe=\"\"))' PASSWORD" in line and 'secret' not in line


def test_database_unreachable(tmp_path):
    output = run(tmp_path, {'DATABASE_URL': f'mysql://u:p@localhost/d?unix_socket={tmp_path}/no.sock'})[1]
    assert 'could not be reached' in output and 'start MariaDB' in output


def test_database_refused_and_schema_missing(tmp_path, mariadb, database_url, admin_url, sql):
    if mariadb is None:
        pytest.skip('needs the private server')
    wrong = database_url.replace('wsgiapp:', 'wsgiapp:wrong', 1)
    output = run(tmp_path, {'DATABASE_URL': wrong})[1]
    assert 'Access denied' in output and 'check the user and password' in output
    sql('CREATE DATABASE IF NOT EXISTS wsgiapp_noschema')
    output = run(tmp_path, {'DATABASE_URL': admin_url.replace('/wsgiapp?', '/wsgiapp_noschema?')})[1]
    assert 'no vc_admin and no idempotency_key and no failed_token table' in output
    assert 'python -m wsgiapp initdb' in output
    assert 'vc_admin and idempotency_key and failed_token exist' in run(tmp_path, {'DATABASE_URL': database_url})[1]
