"""Settings, read once from the environment: nothing secret lives in code or git."""
import os
import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import unquote_to_bytes


class ConfigError(ValueError):
    """A setting is malformed. The message names the variable, never its value."""


@dataclass(frozen=True)
class Settings:
    database: Optional[dict]   # MySQLdb.connect() keyword arguments, None when unusable
    database_problem: str      # why `database` is None, naming the variable
    api_token: Optional[str]   # None: writes are disabled
    pool_size: int = 8         # connections per process
    pool_timeout: float = 2.0  # seconds a request waits for a free connection
    connect_timeout: int = 2   # seconds
    read_timeout: int = 10     # seconds, also used as the write timeout
    max_body: int = 65536      # bytes
    cache_seconds: int = 1     # how long nginx (a shared cache) may answer a read without the app
    stale_if_error: int = 60   # how long past that it may answer while the database is away
    replica_databases: tuple = ()  # connect() kwargs of each replica (DATABASE_REPLICA_URL)
    replica_wait: float = 0.5  # how long a read with a token waits for its replica to catch up
    replica_max_lag: float = 5.0  # how stale a read without a token may be

    def __repr__(self):  # never show the password or the token, e.g. in a traceback
        return (f'Settings(database={"set" if self.database else None}, '
                f'api_token={"set" if self.api_token else None}, pool_size={self.pool_size}, '
                f'pool_timeout={self.pool_timeout}, connect_timeout={self.connect_timeout}, '
                f'read_timeout={self.read_timeout}, max_body={self.max_body}, '
                f'cache_seconds={self.cache_seconds}, stale_if_error={self.stale_if_error}, '
                f'replica_databases={len(self.replica_databases)}, replica_wait={self.replica_wait}, '
                f'replica_max_lag={self.replica_max_lag})')


# The numbers: variable -> (Settings field, default, minimum, maximum, type).
NUMBERS = {
    'WSGIAPP_POOL_SIZE': ('pool_size', 8, 1, 1000, int),
    'WSGIAPP_POOL_TIMEOUT': ('pool_timeout', 2.0, 0.0, 60.0, float),
    'WSGIAPP_DB_CONNECT_TIMEOUT': ('connect_timeout', 2, 1, 60, int),
    'WSGIAPP_DB_READ_TIMEOUT': ('read_timeout', 10, 1, 3600, int),
    'WSGIAPP_MAX_BODY': ('max_body', 65536, 1024, 64 * 1024 * 1024, int),
    'WSGIAPP_CACHE_SECONDS': ('cache_seconds', 1, 0, 3600, int),
    'WSGIAPP_STALE_IF_ERROR': ('stale_if_error', 60, 0, 86400, int),
    'WSGIAPP_REPLICA_WAIT': ('replica_wait', 0.5, 0.0, 10.0, float),
    'WSGIAPP_REPLICA_MAX_LAG': ('replica_max_lag', 5.0, 0.0, 3600.0, float),
}

DATABASE_URL_FORM = 'mysql://USER:PASSWORD@HOST[:PORT]/DBNAME or mysql://USER:PASSWORD@/DBNAME?unix_socket=PATH'
ENCODE_HINT = ("percent-encode every reserved character in the user and password, "
               "e.g. urllib.parse.quote(password, safe='')")
# Unencoded in a user or password, these end or split the part of the URL they are in: the
# URL would mean something else, so it is refused rather than guessed at.
RESERVED_IN_USERINFO = frozenset('@/?#[]')
STRAY_PERCENT = re.compile(r'%(?![0-9A-Fa-f]{2})')
HOST_PORT = re.compile(r'(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]*))(?::(?P<port>[0-9]{1,5}))?')


class _Malformed(Exception):
    """What is wrong with DATABASE_URL, in words that never quote it."""


def parse_database_url(url, name='DATABASE_URL'):
    """mysql://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?unix_socket=PATH] -> connect() kwargs.

    User and password may hold any character, percent-encoded. Whatever the text, the only
    exception is a ConfigError that names the variable (`name`) and the expected form, never
    the value.
    """
    try:
        return _parse(url.strip())
    except _Malformed as problem:
        # Where a password would be, however malformed the rest: up to the last '@'.
        userinfo = url.partition('://')[2].rpartition('@')[0]
        unencoded = RESERVED_IN_USERINFO & set(userinfo) or STRAY_PERCENT.search(userinfo)
        raise ConfigError(f'{name} {problem}; expected {DATABASE_URL_FORM}'
                          + (f'; {ENCODE_HINT}' if unencoded else '')) from None


def _parse(url):
    scheme, sep, rest = url.partition('://')
    if not sep or scheme.lower() not in ('mysql', 'mariadb'):
        raise _Malformed('does not start with mysql://')
    if '#' in rest:
        raise _Malformed('has an unencoded "#"')
    # The user and host part ends at the first '/' or '?' (RFC 3986), so an unencoded one in
    # the password cuts it short; the checks below then fail rather than misread it.
    end = min([i for i in (rest.find('/'), rest.find('?')) if i >= 0] or [len(rest)])
    authority, path_and_query = rest[:end], rest[end:]
    userinfo, at, host_port = authority.rpartition('@')
    if not at:
        raise _Malformed('has no USER@ before the host')
    if RESERVED_IN_USERINFO & set(userinfo):
        raise _Malformed('has an unencoded reserved character in the user or password')
    user, colon, password = userinfo.partition(':')
    if not user:
        raise _Malformed('names no user')
    kwargs = {'user': _decode(user, 'user')}
    if colon:
        kwargs['password'] = _decode(password, 'password')

    host = HOST_PORT.fullmatch(host_port)
    if not host:
        raise _Malformed('has a malformed host or port (a name or [IPv6 address], then :NUMBER)')
    if host['ipv6'] or host['name']:
        kwargs['host'] = host['ipv6'] or host['name']
    if host['port'] is not None:
        if 'host' not in kwargs:
            raise _Malformed('has a port but no host')
        if not 1 <= int(host['port']) <= 65535:
            raise _Malformed('has a port that is not a number from 1 to 65535')
        kwargs['port'] = int(host['port'])

    if not path_and_query.startswith('/'):
        raise _Malformed('names no database')
    path, _, query = path_and_query[1:].partition('?')
    database = _decode(path, 'database name')
    if not database or '/' in database:
        raise _Malformed('names no database')
    kwargs['database'] = database
    for option in filter(None, query.split('&')):
        key, _, value = option.partition('=')
        if key != 'unix_socket' or not value:
            raise _Malformed('has an option other than unix_socket=PATH, the only one known')
        kwargs['unix_socket'] = _decode(value, 'unix_socket')
    if 'host' not in kwargs and 'unix_socket' not in kwargs:
        raise _Malformed('names no host, and no ?unix_socket=PATH')
    return kwargs


def _decode(text, what):
    """Percent-decoded UTF-8. A '%' that starts no %XX escape was meant literally, and would
    be read differently by other tools: refused, like a byte sequence that is not UTF-8."""
    if STRAY_PERCENT.search(text):
        raise _Malformed(f'has a "%" in the {what} that starts no %XX escape')
    try:
        return unquote_to_bytes(text).decode('utf-8')
    except UnicodeDecodeError:
        raise _Malformed(f'has a {what} that is not UTF-8 once percent-decoded') from None


def number(environ, name):
    """The value of one of NUMBERS, its default when unset, or ConfigError naming it."""
    _, default, minimum, maximum, kind = NUMBERS[name]
    raw = environ.get(name, '').strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f'{name} must be a number from {minimum} to {maximum}') from None
    if not minimum <= value <= maximum:  # also refuses nan
        raise ConfigError(f'{name} must be a number from {minimum} to {maximum}')
    return value


def from_environ(environ=None):
    """Build Settings. A bad DATABASE_URL disables the database routes (503); a bad number
    raises ConfigError, and nothing else is raised."""
    environ = os.environ if environ is None else environ
    url = environ.get('DATABASE_URL', '')
    database, problem = None, ''
    if not url.strip():
        problem = 'DATABASE_URL is not set'
    else:
        try:
            database = parse_database_url(url)
        except ConfigError as error:
            problem = str(error)
    return Settings(
        database=database,
        database_problem=problem,
        replica_databases=replica_urls(environ.get('DATABASE_REPLICA_URL', '')),
        api_token=environ.get('WSGIAPP_API_TOKEN') or None,
        **{field: number(environ, name) for name, (field, *_) in NUMBERS.items()},
    )


def replica_urls(value):
    """DATABASE_REPLICA_URL: one or more URLs of DATABASE_URL's form, comma-separated (a comma
    in a password is percent-encoded, %2C). A malformed one is a ConfigError: uwsgi refuses
    to start, rather than send every read to the primary unnoticed."""
    return tuple(parse_database_url(url, 'DATABASE_REPLICA_URL') for url in value.split(',') if url.strip())
