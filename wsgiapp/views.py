"""The handlers. Each takes a Request (and what the route captured) and returns a Response
or raises an HTTPError; none calls start_response or encodes anything."""
import hashlib
import json
import threading
import time
import unicodedata

import MySQLdb

from wsgiapp import metrics, pages
from wsgiapp.admins import Admins, DuplicateName, KeyInProgress, KeyReused, as_item
from wsgiapp.failed_tokens import FailedTokens
from wsgiapp.http import (
    Conflict,
    NotFound,
    UnprocessableEntity,
    consistency_headers,
    html,
    json_response,
    no_content,
    text,
)
from wsgiapp.openapi import OPENAPI
from wsgiapp.pool import Unavailable
from wsgiapp.version import VERSION

MAX_ID = 2**32 - 1  # INT UNSIGNED
DEFAULT_LIMIT, MAX_LIMIT = 10, 100
FIELD_LIMITS = {'name': 64, 'email': 254}
HELLO_WORLD_BYTES = pages.HELLO_WORLD_HTML.encode('utf-8')  # the same bytes every time: encoded once
# Control (Cc), invisible format (Cf: U+202E RIGHT-TO-LEFT OVERRIDE, U+2066-2069 isolates,
# U+200B, U+FEFF...), line and paragraph separators (Zl, Zp) and lone surrogates (Cs): they
# make a name display as something else, reorder the text around it, or break lines.
REFUSED_CATEGORIES = frozenset({'Cc', 'Cf', 'Cs', 'Zl', 'Zp'})
# Except the two joiners (Cf too): Persian and Indic names are spelt with them, and emoji
# sequences such as U+1F469 U+200D U+1F4BB (woman technologist); they reorder nothing.
JOINERS = frozenset('\u200c\u200d')


def _check_text(field, value):
    """A field's value: a non-empty single-line string within its length, no outer spaces,
    and nothing invisible that hides or reorders the text."""
    if not isinstance(value, str):
        raise UnprocessableEntity(f'{field} must be a string')
    if not value or value.strip() != value:
        raise UnprocessableEntity(f'{field} must not be empty or start or end with whitespace')
    if len(value) > FIELD_LIMITS[field]:
        raise UnprocessableEntity(f'{field} must be at most {FIELD_LIMITS[field]} characters')
    if any(unicodedata.category(char) in REFUSED_CATEGORIES and char not in JOINERS for char in value):
        raise UnprocessableEntity(f'{field} must not contain control characters, invisible format characters '
                                  '(such as bidirectional overrides), line separators or lone surrogates')
    if field == 'email':
        local, at, domain = value.rpartition('@')
        if not (local and at and domain) or any(char.isspace() for char in value):
            raise UnprocessableEntity('email must look like user@host, without spaces')
    return value


def validate(body, partial):
    """The fields of a JSON object body, or 422 naming the field at fault."""
    for field in body:
        if field not in FIELD_LIMITS:
            raise UnprocessableEntity(f'{field} is not a known field; send name and email only')
    if not partial:
        for field in FIELD_LIMITS:
            if field not in body:
                raise UnprocessableEntity(f'{field} is required')
    elif not body:
        raise UnprocessableEntity('name or email is required')
    return {field: _check_text(field, value) for field, value in body.items()}


class Views:
    def __init__(self, settings, database):
        self.settings = settings
        self.db = database
        self.admins = Admins(database)
        self.openapi = json.dumps(OPENAPI, indent=1).encode('utf-8')  # built once
        self.failed_tokens = FailedTokens(shared=self._count_failure)
        self._readiness = (float('-inf'), None)  # (checked at, None when ready, else why not)
        self._readiness_lock = threading.Lock()

    def _count_failure(self, address, window):
        """The shared count of wrong tokens (Database.count_failure), or None while the
        database cannot keep it: FailedTokens then counts in this process alone."""
        try:
            return self.db.count_failure(address, window)
        except (Unavailable, MySQLdb.Error):
            return None

    def _page(self, request):
        limit = request.int_param('limit', DEFAULT_LIMIT, 1, MAX_LIMIT)
        after = request.int_param('after', 0, 0, MAX_ID)
        # One more row tells whether a next page exists.
        read = self.admins.list_admins(after, limit + 1, request.consistency_token())
        rows = read.result
        if len(rows) > limit:
            return rows[:limit], f'?after={rows[limit - 1][0]}&limit={limit}', self._answered(read)
        return rows, None, self._answered(read)

    def _answered(self, read):
        """With replicas: which server answered the read. nginx logs it and keeps it from clients."""
        return [('X-Read-Source', read.source)] if self.db.replicated else []

    def _written(self, written):
        """With replicas: the consistency token of the write just committed (docs/replicas.rst)."""
        return consistency_headers(written.token) if written.token else []

    # HTML

    def hello(self, request, name=None):
        return html(HELLO_WORLD_BYTES if name is None else pages.hello(name))

    def admins_page(self, request):
        rows, next_query, headers = self._page(request)
        return html(pages.admins(rows, next_query and '/admins' + next_query), headers=headers)

    # JSON API

    def list_admins(self, request):
        rows, next_query, headers = self._page(request)
        return json_response({'items': [as_item(row) for row in rows],
                              'next': next_query and '/api/admins' + next_query}, headers=headers)

    def get_admin(self, request, admin_id):
        read = self.admins.get_admin(int(admin_id), request.consistency_token())
        if read.result is None:
            raise NotFound(f'admin {admin_id} does not exist', self._answered(read))
        return json_response(as_item(read.result), headers=self._answered(read))

    def create_admin(self, request):
        request.require_bearer(self.settings.api_token, self.failed_tokens)
        body = request.json_object(self.settings.max_body)
        key = request.idempotency_key()  # a 400 of its own, after the body's 413, 415 and 400
        fields = validate(body, partial=False)
        try:
            if key is None:
                written = self.admins.create_admin(fields['name'], fields['email'])
                row = written.result
                return json_response(as_item(row), 201,
                                     [('Location', f'/api/admins/{row[0]}'), *self._written(written)])
            # The same key and the same fields: the first answer again, and no second row.
            fingerprint = hashlib.sha256(json.dumps(fields, sort_keys=True).encode('utf-8')).digest()
            written = self.admins.create_admin_once(
                key.encode('ascii'), fingerprint, fields['name'], fields['email'])
        except DuplicateName:
            raise Conflict('an admin with this name already exists') from None
        except KeyInProgress:
            raise Conflict('a request with this Idempotency-Key is still being processed; retry shortly') from None
        except KeyReused:
            raise UnprocessableEntity('this Idempotency-Key was used with a different request body') from None
        status, item, location, replayed = written.result
        if replayed:
            metrics.recorder.add('wsgiapp_idempotent_replays_total')
        return json_response(item, status, [('Location', location), *self._written(written)]
                             + ([('Idempotent-Replayed', 'true')] if replayed else []))

    def update_admin(self, request, admin_id):
        request.require_bearer(self.settings.api_token, self.failed_tokens)
        changes = validate(request.json_object(self.settings.max_body), partial=True)
        try:
            written = self.admins.update_admin(int(admin_id), changes)
        except DuplicateName:
            raise Conflict('an admin with this name already exists') from None
        if written.result is None:
            raise NotFound(f'admin {admin_id} does not exist')
        return json_response(as_item(written.result), headers=self._written(written))

    def delete_admin(self, request, admin_id):
        request.require_bearer(self.settings.api_token, self.failed_tokens)
        written = self.admins.delete_admin(int(admin_id))
        if not written.result:
            raise NotFound(f'admin {admin_id} does not exist')
        return no_content(self._written(written))

    def openapi_document(self, request):
        return json_response(self.openapi)

    # Operations

    def healthz(self, request):
        return text(f'ok version={VERSION}\n')

    READINESS_SECONDS = 1.0

    def readyz(self, request):
        """The last readiness check of this process (Database.ping), made again once it is a
        second old: however often probes come, the database sees at most one new connection
        a second from a process. One request at a time checks; meanwhile the others answer
        from the last result (the first ones wait for it)."""
        checked_at, problem = self._readiness
        if time.monotonic() - checked_at >= self.READINESS_SECONDS:
            if self._readiness_lock.acquire(blocking=checked_at == float('-inf')):
                try:
                    checked_at, problem = self._readiness  # perhaps just checked by another
                    if time.monotonic() - checked_at >= self.READINESS_SECONDS:
                        try:
                            self.db.ping(timeout=1)
                            problem = None
                        except Unavailable as error:
                            problem = str(error)
                        self._readiness = (time.monotonic(), problem)
                finally:
                    self._readiness_lock.release()
        if problem is not None:
            raise Unavailable(problem)  # a 503, in app.py
        return text('ready\n')
