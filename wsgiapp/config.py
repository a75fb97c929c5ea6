"""Settings, read once from the environment: nothing secret lives in code or git."""
import os
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qs, unquote, urlsplit


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

    def __repr__(self):  # never show the password or the token, e.g. in a traceback
        return (f'Settings(database={"set" if self.database else None}, '
                f'api_token={"set" if self.api_token else None}, pool_size={self.pool_size}, '
                f'pool_timeout={self.pool_timeout}, connect_timeout={self.connect_timeout}, '
                f'read_timeout={self.read_timeout}, max_body={self.max_body})')


def parse_database_url(url):
    """mysql://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?unix_socket=PATH] -> connect() kwargs."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ('mysql', 'mariadb'):
        raise ConfigError('DATABASE_URL must look like mysql://USER:PASSWORD@HOST[:PORT]/DBNAME')
    try:
        port = parts.port
    except ValueError:
        raise ConfigError('DATABASE_URL has a port that is not a number from 1 to 65535') from None
    if not parts.username:
        raise ConfigError('DATABASE_URL names no user: mysql://USER:PASSWORD@HOST/DBNAME')
    database = unquote(parts.path[1:])
    if not database or '/' in database:
        raise ConfigError('DATABASE_URL names no database: mysql://USER:PASSWORD@HOST/DBNAME')
    kwargs = {'user': unquote(parts.username), 'database': database}
    if parts.password is not None:
        kwargs['password'] = unquote(parts.password)
    if parts.hostname:
        kwargs['host'] = parts.hostname
    if port:
        kwargs['port'] = port
    options = parse_qs(parts.query, keep_blank_values=True)
    for key, values in options.items():
        if key != 'unix_socket':
            raise ConfigError(f'DATABASE_URL has an unknown option {key!r}; only unix_socket is known')
        kwargs['unix_socket'] = values[-1]
    return kwargs


def _number(environ, name, default, minimum, maximum, kind=int):
    raw = environ.get(name, '').strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f'{name} must be a number from {minimum} to {maximum}') from None
    if not minimum <= value <= maximum:
        raise ConfigError(f'{name} must be a number from {minimum} to {maximum}')
    return value


def from_environ(environ=None):
    """Build Settings. A bad DATABASE_URL disables the database routes (503); a bad number raises."""
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
        api_token=environ.get('WSGIAPP_API_TOKEN') or None,
        pool_size=_number(environ, 'WSGIAPP_POOL_SIZE', 8, 1, 1000),
        pool_timeout=_number(environ, 'WSGIAPP_POOL_TIMEOUT', 2.0, 0.0, 60.0, float),
        connect_timeout=_number(environ, 'WSGIAPP_DB_CONNECT_TIMEOUT', 2, 1, 60),
        read_timeout=_number(environ, 'WSGIAPP_DB_READ_TIMEOUT', 10, 1, 3600),
        max_body=_number(environ, 'WSGIAPP_MAX_BODY', 65536, 1024, 64 * 1024 * 1024),
    )
