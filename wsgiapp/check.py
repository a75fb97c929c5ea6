"""`python -m wsgiapp check`: diagnose a deployment, naming the fix for each classic fault
of an nginx + uwsgi + MySQL setup. Exit status 1 when something needs fixing."""
import grp
import os
import pwd
import re
import socket
import stat

import MySQLdb

from wsgiapp import config, db

DEFAULT_RUN_DIR = '/run/wsgiapp'


class Report:
    def __init__(self, out):
        self.out = out
        self.failed = 0

    def ok(self, what):
        self.out(f'ok    {what}')

    def fail(self, what, fix):
        self.failed += 1
        self.out(f'FAIL  {what}\n      fix: {fix}')


def check_ini(report, path):
    try:
        with open(path, encoding='utf-8') as ini:
            lines = [line.strip() for line in ini]
    except OSError as error:
        report.fail(f'uwsgi config {path}: {error.strerror}', 'pass --ini with the path of your uwsgi .ini file')
        return
    first = next((line for line in lines if line and not line.startswith((';', '#'))), '')
    if first != '[uwsgi]':
        report.fail(f'uwsgi config {path} does not start with the [uwsgi] section header',
                    'add a line "[uwsgi]" at the top: without it uwsgi does not read the options')
    else:
        report.ok(f'uwsgi config {path} has its [uwsgi] header')
    if any(re.match(r'chmod-socket\s*=\s*0?666\b', line) for line in lines):
        report.fail(f'uwsgi config {path} sets chmod-socket = 666: every local user can talk to the app',
                    "use chmod-socket = 660 with chown-socket = USER:www-data (nginx's group)")


def _can_write(path_stat, user):
    """Whether `user` may connect to a unix socket with this owner and mode (needs write)."""
    if user.pw_uid == 0:
        return True
    groups = {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem} | {user.pw_gid}
    mode = path_stat.st_mode
    if path_stat.st_uid == user.pw_uid:
        return bool(mode & stat.S_IWUSR)
    if path_stat.st_gid in groups:
        return bool(mode & stat.S_IWGRP)
    return bool(mode & stat.S_IWOTH)


def check_socket(report, path, nginx_user):
    try:
        info = os.stat(path)
    except OSError:
        report.fail(f'uwsgi socket {path} does not exist (nginx would answer 502)',
                    'start uwsgi (systemctl start wsgiapp, or make run) and point uwsgi_pass at the same path')
        return
    if not stat.S_ISSOCK(info.st_mode):
        report.fail(f'{path} is not a socket', 'remove it and restart uwsgi')
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(path)
        except OSError as error:
            report.fail(f'uwsgi socket {path} refuses connections ({error.strerror}): uwsgi is not running',
                        'start uwsgi; a stale socket file is left by a uwsgi killed without vacuum')
            return
    report.ok(f'uwsgi socket {path} accepts connections')
    if info.st_mode & stat.S_IWOTH:
        report.fail(f'uwsgi socket {path} is world-writable: every local user can talk to the app',
                    "chmod-socket = 660 and chown-socket = USER:www-data (nginx's group)")
    try:
        user = pwd.getpwnam(nginx_user)
    except KeyError:
        report.fail(f'there is no user {nginx_user!r} to check the socket against',
                    "pass --nginx-user with the user in nginx's 'user' directive")
        return
    if _can_write(info, user):
        report.ok(f'nginx user {nginx_user} may connect to {path}')
    else:
        owner = f'{pwd.getpwuid(info.st_uid).pw_name}:{grp.getgrgid(info.st_gid).gr_name}'
        report.fail(f'nginx user {nginx_user} may not connect to {path} '
                    f'(owner {owner}, mode {stat.S_IMODE(info.st_mode):o}): nginx would answer 502',
                    f'chown-socket = USER:{grp.getgrgid(user.pw_gid).gr_name} and chmod-socket = 660 in uwsgi.ini')


def check_nginx(report, path, socket_path):
    try:
        with open(path, encoding='utf-8') as conf:
            text = re.sub(r'#[^\n]*', '', conf.read())
    except OSError as error:
        report.fail(f'nginx site {path}: {error.strerror}', 'pass --nginx-conf with the path of your nginx site file')
        return
    if 'uwsgi_pass' not in text:
        report.fail(f'nginx site {path} has no uwsgi_pass', 'add: location / { include uwsgi_params; uwsgi_pass unix:SOCKET; }')
        return
    if not re.search(r'include\s+\S*uwsgi_params\s*;', text):
        report.fail(f'nginx site {path} does not include uwsgi_params: uwsgi gets no PATH_INFO, '
                    'REQUEST_METHOD or headers', 'add "include uwsgi_params;" next to uwsgi_pass')
    else:
        report.ok(f'nginx site {path} includes uwsgi_params')
    passes = re.findall(r'uwsgi_pass\s+unix:([^;\s]+)\s*;', text)
    if socket_path and passes and os.path.abspath(socket_path) not in map(os.path.abspath, passes):
        report.fail(f'nginx passes to {", ".join(passes)} but uwsgi listens on {socket_path}',
                    'make uwsgi_pass and uwsgi\'s socket option name the same path')


def check_database(report, environ):
    settings = config.from_environ(environ)
    if settings.database is None:
        report.fail(settings.database_problem,
                    'set DATABASE_URL=mysql://USER:PASSWORD@HOST/DBNAME in the uwsgi environment '
                    '(EnvironmentFile= in the systemd unit)')
        return
    try:
        con = MySQLdb.connect(**db.connect_kwargs(settings, connect_timeout=2, read_timeout=2))
    except MySQLdb.OperationalError as error:
        code = error.args[0] if error.args else 0
        if code in (1044, 1045, 1698):
            fix = 'check the user and password in DATABASE_URL and the GRANT (README: "The database user")'
        elif code == 1049:
            fix = 'create the database named in DATABASE_URL, or fix its name'
        else:
            fix = 'start MariaDB, or fix the host, port or unix_socket in DATABASE_URL'
        report.fail(f'the database refused or could not be reached: {db.describe(error)}', fix)
        return
    try:
        cursor = con.cursor()
        cursor.execute("SELECT COUNT(*) FROM information_schema.tables "
                       "WHERE table_schema = DATABASE() AND table_name = 'vc_admin'")
        if cursor.fetchone()[0]:
            report.ok('DATABASE_URL connects and vc_admin exists')
        else:
            report.fail('the database has no vc_admin table', 'run: python -m wsgiapp initdb')
    finally:
        con.close()


def main(args, environ=None, out=print):
    environ = os.environ if environ is None else environ
    report = Report(out)
    run_dir = environ.get('WSGIAPP_RUN_DIR', DEFAULT_RUN_DIR)
    socket_path = args.socket or os.path.join(run_dir, 'uwsgi.sock')
    check_ini(report, args.ini)
    check_socket(report, socket_path, args.nginx_user)
    check_nginx(report, args.nginx_conf, socket_path)
    check_database(report, environ)
    out(f'{report.failed} problem(s) found' if report.failed else 'all checks passed')
    return 1 if report.failed else 0


def add_arguments(parser):
    parser.add_argument('--ini', default='conf/uwsgi.ini', help='uwsgi config (default: %(default)s)')
    parser.add_argument('--socket', help='uwsgi socket (default: $WSGIAPP_RUN_DIR/uwsgi.sock or /run/wsgiapp/uwsgi.sock)')
    parser.add_argument('--nginx-conf', default='/etc/nginx/sites-enabled/wsgiapp',
                        help='nginx site file (default: %(default)s)')
    parser.add_argument('--nginx-user', default='www-data', help="the user nginx's workers run as (default: %(default)s)")
