"""The WSGI entry point, `application(environ, start_response)`, and the one place where
what a handler returns or raises becomes a status line, headers and bytes.

uwsgi loads it by file (`uwsgi --socket /tmp/my.sock --wsgi-file wsgiapp/app.py`), so it
uses absolute imports only, and there is no `app.run()` block: `python -m wsgiapp serve`
is the development server.
"""
import hashlib
import json
import os
import sys
import time
import traceback
from datetime import datetime, timezone
from email.utils import formatdate

if __package__ in (None, ''):  # loaded by path, as uwsgi's wsgi-file does: find the package beside it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from wsgiapp import config, db, metrics, pages, routing  # noqa: E402
from wsgiapp.http import (  # noqa: E402
    NO_STORE,
    PRIVATE,
    STATUS_LINES,
    BadRequest,
    HTTPError,
    Request,
    ServiceUnavailable,
    html,
    json_response,
    text,
)
from wsgiapp.pool import Unavailable  # noqa: E402
from wsgiapp.version import VERSION  # noqa: E402
from wsgiapp.views import Views  # noqa: E402

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
NO_BODY = (204, 304)
# The headers that never change, built once: each response reuses the same tuples.
NOSNIFF = ('X-Content-Type-Options', 'nosniff')
VERSION_HEADER = ('X-App-Version', VERSION)
CSP_HEADER = ('Content-Security-Policy', CSP)
# nginx may gzip what it passes on (text/html always, and gzip_types: application/json), so
# the app says that such an answer varies with Accept-Encoding, on its 304 too (RFC 9110
# 15.4.5); nginx adds no Vary of its own (gzip_vary off) and keeps one cache entry for all
# encodings (uwsgi_ignore_headers Vary): conf/nginx/wsgiapp.conf, docs/caching.rst.
VARY = ('Vary', 'Accept-Encoding')
COMPRESSIBLE = ('text/html', 'application/json')
# JSON bodies as compact UTF-8, with one encoder made once (json.dumps makes one per call
# when given options).
encode_json = json.JSONEncoder(ensure_ascii=False, separators=(',', ':')).encode
_date = [0, ('Date', '')]  # (second, its Date header): formatted once a second, not per response


def date_header():
    second = int(time.time())
    if _date[0] != second:
        _date[:] = second, ('Date', formatdate(second, usegmt=True))
    return _date[1]


def etag_of(body):
    """The body's hash as a weak tag. nginx's gzip turns a strong tag into a weak one on the
    200 it compresses, and never sees the 304 of the same answer: a tag weak from the start
    reads the same on both (RFC 9110 15.4.5), and If-None-Match compares weakly anyway."""
    return 'W/"%s"' % hashlib.blake2b(body, digest_size=16).hexdigest()


class Etags:
    """etag_of(body), remembered for the bodies seen lately: the same page or listing is
    made again and again (the same data, the same name), and looking a body up (Python's
    hash of the bytes, kept on a constant body such as `/`'s) costs a fraction of hashing
    it with BLAKE2b. Up to `budget` bytes of bodies are kept, then all are forgotten at once."""

    def __init__(self, budget=1 << 20):
        self.budget, self.kept, self.etags = budget, 0, {}

    def __call__(self, body):
        etag = self.etags.get(body)
        if etag is None:
            etag = etag_of(body)
            if len(body) <= self.budget >> 4:  # a big body is hashed each time, never kept
                self.kept += len(body)
                if self.kept > self.budget:
                    self.etags.clear()
                    self.kept = len(body)
                self.etags[body] = etag
        return etag


class Kind:
    """What a content type adds to a response, worked out once per type: its Content-Type
    header, the CSP of an HTML page, and the Vary of what nginx may compress."""
    __slots__ = ('content_type', 'csp', 'vary')

    def __init__(self, content_type):
        self.content_type = ('Content-Type', content_type)
        self.csp = content_type is not None and content_type.startswith('text/html')
        self.vary = content_type is not None and content_type.partition(';')[0].strip() in COMPRESSIBLE


# Reads whose answer is the same for every client: GET and HEAD, 200 or 404, but for the
# probes (routing.UNCACHED) and reads with a credential or a consistency token (`private,
# no-store`, and never sent to nginx's stale copy). Everything else (writes, other errors)
# is `no-store`.
CACHEABLE_METHODS, CACHEABLE_STATUSES = ('GET', 'HEAD'), (200, 404)
# Variables of the uwsgi protocol that make uWSGI 2.0 load code, set the environment, read
# a file as the body or change directory. nginx never sends them (its uwsgi_param lines
# here set none), so a packet carrying one did not come through nginx.
# A set: `environ.keys().isdisjoint()` looks each up in C (0.26 against 0.68 us for any()).
UWSGI_CONTROL = frozenset({'UWSGI_FILE', 'UWSGI_SCRIPT', 'UWSGI_MODULE', 'UWSGI_CALLABLE', 'UWSGI_APPID',
                           'UWSGI_SETENV', 'UWSGI_POSTFILE', 'UWSGI_CHDIR', 'UWSGI_HOME', 'UWSGI_PYHOME',
                           'UWSGI_TOUCH_RELOAD', 'UWSGI_SCHEME'})


class Application:
    def __init__(self, settings):
        self.settings = settings
        # Browsers revalidate every time (max-age=0: a cheap 304 with the ETag); a shared cache
        # (nginx) may answer for s-maxage seconds, 1 s more while it refreshes the entry in
        # the background, and stale-if-error seconds more while the app cannot answer.
        self.cache_control = ('Cache-Control', f'public, max-age=0, s-maxage={settings.cache_seconds}, '
                                               f'stale-while-revalidate=1, stale-if-error={settings.stale_if_error}')
        # Before the database: uwsgi's master empties the metrics directory here, before it forks.
        self.metrics = metrics.configure(settings.metrics_dir)
        self.database = db.Database(settings)
        self.router = routing.build(Views(settings, self.database))
        # Shared by a worker's threads: an entry is a function of its key, so a race between
        # them can only miscount the budget (a dict's get and set are atomic).
        self.etag = Etags()
        self.kinds = {}  # content type -> Kind: the few types the code itself names

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        request = Request(environ)
        route = routing.UNMATCHED
        try:
            if request.path is None:
                raise BadRequest('the path is not valid UTF-8')
            if not environ.keys().isdisjoint(UWSGI_CONTROL):
                self.log(request, 'refused a uwsgi packet with UWSGI_* control variables: '
                                  'something other than nginx can reach the socket')
                raise BadRequest('this request did not come through the web server')
            found, args = self.router.match(request.path)
            route = found.label
            response = found.handler(request.method)(request, *args)
        except HTTPError as error:
            response = self.error(request, error)
        except Unavailable as error:
            response = self.error(request, self.unavailable(request, error))
        except Exception:
            self.log(request, 'unexpected error\n' + traceback.format_exc())
            response = self.error(request, HTTPError('internal server error; see the server log'))
        status, body = self.send(request, response, start_response, route)
        self.metrics.request(route, request.method, status, time.perf_counter() - started)
        return body

    def unavailable(self, request, error):
        if self.settings.database is None:
            return ServiceUnavailable(f'the database is not configured: {self.settings.database_problem}', 30)
        self.log(request, f'database unavailable: {error}')
        return ServiceUnavailable('the database is unavailable; try again shortly')

    def error(self, request, error):
        """An HTTPError as a response in the kind of the route: JSON, plain text or HTML."""
        kind = routing.kind_of(request.path or '')
        if kind == 'json':
            body = {'error': {'status': error.status, 'message': error.message}}
            return json_response(body, error.status, error.headers)
        if kind == 'text':
            return text(error.message + '\n', error.status, error.headers)
        reason = STATUS_LINES[error.status].partition(' ')[2]
        return html(pages.error(error.status, reason, error.message), error.status, error.headers)

    def send(self, request, response, start_response, route):
        """Bytes, an exact Content-Length and the common headers, for every response (cf.
        Bottle's _cast): (the status sent, the body's iterable)."""
        body = response.body
        if isinstance(body, str):
            body = body.encode('utf-8')
        elif not isinstance(body, bytes):
            body = encode_json(body).encode('utf-8')
        # Date: when this answer was made, which a copy from nginx's cache keeps (its age).
        # X-App-Version: the code that made it (wsgiapp/version.py), for rolling deploys.
        # X-Route: the route's pattern, for nginx's log (which hides it from clients).
        headers = [NOSNIFF, ('X-Request-ID', request.id), date_header(), VERSION_HEADER, ('X-Route', route)]
        status, read = response.status, request.method in CACHEABLE_METHODS
        # A read with a credential or a consistency token, in any form (Request.private), is
        # this client's alone: `private, no-store`, never public, whatever its status.
        private = read and request.private
        cacheable = read and request.path not in routing.UNCACHED and not private
        if private:
            headers.append(PRIVATE)
        else:
            headers.append(self.cache_control if cacheable and status in CACHEABLE_STATUSES else NO_STORE)
        if status == 503 and cacheable:
            # Behind nginx: let it answer from its cache, within the app's stale-if-error.
            stale = request.environ.get('WSGIAPP_STALE_LOCATION', '')
            if stale.startswith('@'):
                headers.append(('X-Accel-Redirect', stale))
        kind = self.kinds.get(response.content_type)
        if kind is None:
            kind = self.kinds[response.content_type] = Kind(response.content_type)
        if status == 200 and read:
            etag = self.etag.etags.get(body) or self.etag(body)  # the lookup inline: the usual case
            headers.append(('ETag', etag))
            if etag_matches(request.environ.get('HTTP_IF_NONE_MATCH'), etag):
                # RFC 9110 15.4.5: what a 200 would have said of caching (ETag, Cache-Control,
                # Vary), no body.
                status = 304
        if status in NO_BODY:
            body = b''
        else:
            headers.append(kind.content_type)
            headers.append(('Content-Length', str(len(body))))
            if kind.csp:
                headers.append(CSP_HEADER)
        if kind.vary:
            headers.append(VARY)
        headers.extend(response.headers)
        start_response(STATUS_LINES[status], headers)
        return status, [] if request.method == 'HEAD' or not body else [body]

    @staticmethod
    def log(request, message, level='error'):
        """One JSON line on uwsgi's log (the journal on a server), with the request's id, as
        nginx's access logs have it: `make logs ID=` joins them."""
        errors = request.environ['wsgi.errors']
        errors.write(json.dumps({'time': datetime.now(timezone.utc).isoformat(timespec='milliseconds'),
                                 'level': level, 'request_id': request.id, 'method': request.method,
                                 'path': request.path, 'message': message}) + '\n')
        errors.flush()


def etag_matches(if_none_match, etag):
    """If-None-Match against our ETag: `*`, or a list compared weakly (RFC 9110 8.8.3.2: the
    opaque tags alike, W/ or not)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == '*':
        return True
    opaque = etag.removeprefix('W/')
    return any(tag.strip().removeprefix('W/') == opaque for tag in if_none_match.split(','))


application = Application(config.from_environ())
