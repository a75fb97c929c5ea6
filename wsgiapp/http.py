"""HTTP without a framework: the Request a handler reads, the Response it returns,
and one exception class per error status, raised where the problem is found."""
import hmac
import json
import re
import secrets
import time
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import parse_qs

from wsgiapp import metrics

NO_STORE = ('Cache-Control', 'no-store')  # for answers no cache may keep
# For a read that carries a credential or a consistency token (Request.private): for this
# client only, kept by no cache, shared or not.
PRIVATE = ('Cache-Control', 'private, no-store')
STATUS_LINES = {status.value: f'{status.value} {status.phrase}' for status in HTTPStatus}
_DECIMAL = re.compile(r'[0-9]{1,20}')
_KEY = re.compile(r'[\x21-\x7e]+')  # printable ASCII, no space
# An incoming X-Request-ID is kept only if it is 1 to 128 of these (nginx's $request_id is
# 32 hex digits); anything else could forge a log line or a header, and is replaced.
_REQUEST_ID = re.compile(r'[A-Za-z0-9._:-]{1,128}')


# Writes refused for their bearer token, by why (metrics).
REFUSED = {reason: metrics.sample('wsgiapp_credentials_refused_total', reason=reason)
           for reason in ('missing', 'wrong', 'limited')}
_now = [0, '']  # (second, its HTTP date): formatted once a second, not per response


def http_date():
    second = int(time.time())
    if _now[0] != second:
        _now[:] = second, formatdate(second, usegmt=True)
    return _now[1]


class HTTPError(Exception):
    status = 500

    def __init__(self, message, headers=()):
        super().__init__(message)
        self.message = message
        self.headers = list(headers)


class BadRequest(HTTPError):
    status = 400


class Unauthorized(HTTPError):
    status = 401

    def __init__(self, message, error=None):
        challenge = 'Bearer realm="wsgiapp"' + (f', error="{error}"' if error else '')
        super().__init__(message, [('WWW-Authenticate', challenge)])


class Forbidden(HTTPError):
    status = 403


class NotFound(HTTPError):
    status = 404


class MethodNotAllowed(HTTPError):
    status = 405

    def __init__(self, allowed):
        allow = ', '.join(allowed)
        super().__init__(f'method not allowed here; allowed: {allow}', [('Allow', allow)])


class Conflict(HTTPError):
    status = 409


class PayloadTooLarge(HTTPError):
    status = 413


class TooManyRequests(HTTPError):
    status = 429

    def __init__(self, message, retry_after):
        super().__init__(message, [('Retry-After', str(retry_after))])


class UnsupportedMediaType(HTTPError):
    status = 415


class UnprocessableEntity(HTTPError):
    status = 422


class ServiceUnavailable(HTTPError):
    status = 503

    def __init__(self, message, retry_after=1):
        super().__init__(message, [('Retry-After', str(retry_after))])


class Response:
    """What a handler returns. `body` is str (HTML or text), a JSON-able object, or
    bytes; the application turns it into bytes in one place."""
    __slots__ = ('body', 'status', 'content_type', 'headers')

    def __init__(self, body, status=200, content_type='text/html; charset=utf-8', headers=()):
        self.body = body
        self.status = status
        self.content_type = content_type
        self.headers = list(headers)


def html(body, status=200, headers=()):
    return Response(body, status, 'text/html; charset=utf-8', headers)


def json_response(data, status=200, headers=()):
    return Response(data, status, 'application/json', headers)


def text(body, status=200, headers=()):
    return Response(body, status, 'text/plain; charset=utf-8', headers)


def no_content(headers=()):
    return Response(b'', 204, None, headers)


def _reject_constant(name):
    raise ValueError(f'{name} is not JSON')


CONSISTENCY_COOKIE = 'wsgiapp_consistency'
# How long a browser sends the token back: longer than any replica may lag behind
# (WSGIAPP_REPLICA_MAX_LAG) plus nginx's cache, after which a read without it is fresh anyway.
CONSISTENCY_SECONDS = 60


def consistency_headers(token):
    """A write's token, for an API client (the header) and a browser (the cookie)."""
    return [('X-Consistency-Token', token),
            ('Set-Cookie', f'{CONSISTENCY_COOKIE}={token}; Max-Age={CONSISTENCY_SECONDS}; Path=/; '
                           'Secure; HttpOnly; SameSite=Lax')]


class Request:
    """One request, decoded lazily and exactly as PEP 3333 hands it over."""

    def __init__(self, environ):
        self.environ = environ
        self.method = environ['REQUEST_METHOD']
        self._query = None
        self._id = None
        # PEP 3333: PATH_INFO is bytes carried in a latin-1 str; the bytes are UTF-8.
        try:
            self.path = environ.get('PATH_INFO', '').encode('latin-1').decode('utf-8')
        except UnicodeError:
            self.path = None  # app.py answers 400

    @property
    def id(self):
        if self._id is None:
            given = self.environ.get('HTTP_X_REQUEST_ID', '')
            self._id = given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(16)
        return self._id

    @property
    def query(self):
        if self._query is None:
            self._query = parse_qs(self.environ.get('QUERY_STRING', ''), keep_blank_values=True)
        return self._query

    def int_param(self, name, default, minimum, maximum):
        """A plain decimal query parameter in [minimum, maximum], else 400."""
        values = self.query.get(name)
        if values is None:
            return default
        if len(values) > 1:
            raise BadRequest(f'query parameter {name!r} is given more than once')
        if _DECIMAL.fullmatch(values[0]):
            value = int(values[0])
            if minimum <= value <= maximum:
                return value
        raise BadRequest(f'query parameter {name!r} must be a decimal integer from {minimum} to {maximum}')

    def require_bearer(self, token, failures):
        """403 when writes are disabled, 429 while this client's address has had too many
        wrong tokens (FailedTokens), 401 unless the bearer token matches (in constant time)."""
        if not token:
            raise Forbidden('writes are disabled on this server (WSGIAPP_API_TOKEN is not set)')
        scheme, _, given = self.environ.get('HTTP_AUTHORIZATION', '').strip().partition(' ')
        given = given.strip()
        if scheme.lower() != 'bearer' or not given:
            metrics.recorder.add(REFUSED['missing'])
            raise Unauthorized('this request needs an Authorization: Bearer token')
        address = self.environ.get('REMOTE_ADDR', '')
        try:
            failures.check(address)
        except TooManyRequests:
            metrics.recorder.add(REFUSED['limited'])
            raise
        if not hmac.compare_digest(given.encode('latin-1', 'replace'), token.encode('utf-8')):
            metrics.recorder.add(REFUSED['wrong'])
            failures.add(address)
            raise Unauthorized('the bearer token is not valid', error='invalid_token')

    @property
    def private(self):
        """Whether the request carries a credential or a consistency token in any form that
        nginx or this app would read: an Authorization or X-Consistency-Token header, even
        empty or repeated (nginx reads the first, the app what uwsgi passes), or the token's
        cookie name anywhere in Cookie, whatever spacing or tab is around it. Its answer is
        private (app.py): one reading of credentials, and nginx never keeps it."""
        environ = self.environ
        return ('HTTP_AUTHORIZATION' in environ or 'HTTP_X_CONSISTENCY_TOKEN' in environ
                or CONSISTENCY_COOKIE in environ.get('HTTP_COOKIE', '').lower())

    def consistency_token(self):
        """The client's last write, as its consistency token: the X-Consistency-Token header,
        else the wsgiapp_consistency cookie; None when it sent neither. Whatever it is, the
        database layer weighs it (replicas.gtid_position): a bad one sends the read to the primary."""
        given = self.environ.get('HTTP_X_CONSISTENCY_TOKEN')
        if given is not None:
            return given
        for pair in self.environ.get('HTTP_COOKIE', '').split(';'):
            name, equals, value = pair.strip().partition('=')
            if equals and name == CONSISTENCY_COOKIE:
                return value.strip().strip('"')
        return None

    def idempotency_key(self):
        """The Idempotency-Key header (IETF draft): None when absent, else 1 to 255 printable
        ASCII characters, optionally in the quotes of a structured-field string; else 400."""
        given = self.environ.get('HTTP_IDEMPOTENCY_KEY')
        if given is None:
            return None
        key = given.strip()
        if len(key) >= 2 and key[0] == key[-1] == '"':
            key = key[1:-1]
        if not 1 <= len(key) <= 255 or not _KEY.fullmatch(key):
            raise BadRequest('Idempotency-Key must be 1 to 255 printable ASCII characters')
        return key

    def json_object(self, max_body):
        """The body as a JSON object: 413, 415, then 400, in that order.
        The body is read only up to CONTENT_LENGTH, and not at all when it is too long."""
        raw_length = self.environ.get('CONTENT_LENGTH', '').strip()
        length = int(raw_length) if _DECIMAL.fullmatch(raw_length) else None
        if length is not None and length > max_body:
            raise PayloadTooLarge(f'the request body is over {max_body} bytes')
        media_type, _, params = self.environ.get('CONTENT_TYPE', '').partition(';')
        if media_type.strip().lower() != 'application/json':
            raise UnsupportedMediaType('the request body must be application/json')
        charset = params.strip().lower()
        if charset and charset.replace(' ', '') not in ('charset=utf-8', 'charset="utf-8"'):
            raise UnsupportedMediaType('the request body must be encoded as utf-8')
        if raw_length and length is None:
            raise BadRequest('Content-Length is not a decimal number')
        if length is None:
            if not self.environ.get('wsgi.input_terminated'):
                raise BadRequest('the request body is empty; send a JSON object')
            data = self._read(max_body + 1)  # chunked: read one byte past the limit to detect it
            if len(data) > max_body:
                raise PayloadTooLarge(f'the request body is over {max_body} bytes')
        else:
            data = self._read(length)
            if len(data) < length:
                raise BadRequest('the request body is shorter than its Content-Length')
        try:
            value = json.loads(data.decode('utf-8'), parse_constant=_reject_constant)
        except UnicodeDecodeError:
            raise BadRequest('the request body is not valid UTF-8') from None
        except (ValueError, RecursionError):
            raise BadRequest('the request body is not valid JSON') from None
        if not isinstance(value, dict):
            raise BadRequest('the request body must be a JSON object')
        return value

    def _read(self, size):
        stream, chunks, left = self.environ['wsgi.input'], [], size
        try:
            while left > 0:
                chunk = stream.read(left)
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
        except OSError:  # the client went away or timed out mid-body
            raise BadRequest('the request body could not be read') from None
        return b''.join(chunks)
