"""falcon-headers: the falcon peer giving wsgiapp's answers header for header, the usual
Falcon way (one middleware's process_response; resp.etag, resp.cache_control, resp.vary),
with wsgiapp's own values and its ETag cache. `falcon` sends two headers where wsgiapp sends
eleven on `/`, and carrying them costs uwsgi and nginx apart from any code (`ceiling-headers`
against `ceiling`): this peer is a framework against none for the same answer."""
import secrets

from bench.peers.falcon_app import make_app, settings
from wsgiapp.app import CSP, Etags, date_header, etag_matches
from wsgiapp.http import _REQUEST_ID as REQUEST_ID  # the ids wsgiapp takes from nginx
from wsgiapp.http import CONSISTENCY_COOKIE
from wsgiapp.version import VERSION

PUBLIC = ['public', 'max-age=0', f's-maxage={settings.cache_seconds}', 'stale-while-revalidate=1',
          f'stale-if-error={settings.stale_if_error}']


class CommonHeaders:
    def __init__(self):
        self.etag = Etags()

    def process_response(self, req, resp, resource, req_succeeded):
        given = req.get_header('X-Request-ID') or ''
        resp.set_header('X-Content-Type-Options', 'nosniff')
        resp.set_header('X-Request-ID', given if REQUEST_ID.fullmatch(given) else secrets.token_hex(16))
        resp.set_header('Date', date_header()[1])
        resp.set_header('X-App-Version', VERSION)
        resp.set_header('X-Route', req.uri_template or 'unmatched')
        read = req.method in ('GET', 'HEAD')
        env = req.env
        private = read and ('HTTP_AUTHORIZATION' in env or 'HTTP_X_CONSISTENCY_TOKEN' in env
                            or CONSISTENCY_COOKIE in env.get('HTTP_COOKIE', '').lower())
        if private:
            resp.cache_control = ['private', 'no-store']
        elif read and resp.status_code in (200, 404):
            resp.cache_control = PUBLIC
        else:
            resp.cache_control = ['no-store']
        if read and resp.status_code == 200:
            resp.etag = self.etag(resp.render_body())
            if etag_matches(req.get_header('If-None-Match'), resp.etag):
                # As wsgiapp's 304: what the 200 says of caching, nothing of a body.
                resp.status, resp.text, resp.media, resp.content_type = 304, None, None, None
        if (resp.content_type or '').startswith('text/html'):  # None until a body is rendered
            resp.set_header('Content-Security-Policy', CSP)
        resp.vary = ['Accept-Encoding']


application = make_app([CommonHeaders()])
