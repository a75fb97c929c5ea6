"""wsgiapp.http without a server: status lines, the error classes and their headers, the
Response helpers, the failed-token limiter, and how a Request reads what a client sent."""
import io
from email.utils import formatdate

import pytest

from wsgiapp import http
from wsgiapp.failed_tokens import FailedTokens
from wsgiapp.http import (
    BadRequest,
    Conflict,
    Forbidden,
    HTTPError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Request,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnprocessableEntity,
    UnsupportedMediaType,
)

TOKEN = 'right-token'


def request(method='GET', path='/', body=None, **environ):
    """A Request over a minimal PEP 3333 environ; `body` becomes wsgi.input."""
    environ = {'REQUEST_METHOD': method, 'PATH_INFO': path, **environ}
    if body is not None:
        environ['wsgi.input'] = body if hasattr(body, 'read') else io.BytesIO(body)
    return Request(environ)


def raised(function, *args):
    """The HTTPError that function(*args) raises (and the test fails if it raises none)."""
    with pytest.raises(HTTPError) as caught:
        function(*args)
    return caught.value


class Clock:
    """time.monotonic and time.time, moved by hand."""

    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    ticking = Clock()
    monkeypatch.setattr(http.time, 'monotonic', ticking)
    return ticking


# Status lines, errors and responses

@pytest.mark.parametrize('status, line', [
    (200, '200 OK'), (201, '201 Created'), (204, '204 No Content'), (304, '304 Not Modified'),
    (400, '400 Bad Request'), (401, '401 Unauthorized'), (403, '403 Forbidden'), (404, '404 Not Found'),
    (405, '405 Method Not Allowed'), (409, '409 Conflict'), (413, '413 Request Entity Too Large'),
    (415, '415 Unsupported Media Type'), (422, '422 Unprocessable Entity'), (429, '429 Too Many Requests'),
    (500, '500 Internal Server Error'), (503, '503 Service Unavailable'),
])
def test_status_lines(status, line):
    assert http.STATUS_LINES[status] == line


@pytest.mark.parametrize('error, status', [
    (HTTPError('m'), 500), (BadRequest('m'), 400), (Unauthorized('m'), 401), (Forbidden('m'), 403),
    (NotFound('m'), 404), (MethodNotAllowed(['GET']), 405), (Conflict('m'), 409), (PayloadTooLarge('m'), 413),
    (UnsupportedMediaType('m'), 415), (UnprocessableEntity('m'), 422), (TooManyRequests('m', 3), 429),
    (ServiceUnavailable('m'), 503),
])
def test_each_error_has_its_status(error, status):
    assert error.status == status
    assert isinstance(error, HTTPError)


def test_an_error_carries_its_message_and_headers():
    error = NotFound('nothing here', [('X-A', '1')])
    assert (error.message, str(error), error.headers) == ('nothing here', 'nothing here', [('X-A', '1')])
    assert BadRequest('bad').headers == []
    assert isinstance(BadRequest('bad').headers, list)


def test_unauthorized_challenges_with_the_bearer_scheme():
    assert Unauthorized('who?').headers == [('WWW-Authenticate', 'Bearer realm="wsgiapp"')]
    assert Unauthorized('no', error='invalid_token').headers == [
        ('WWW-Authenticate', 'Bearer realm="wsgiapp", error="invalid_token"')]
    assert Unauthorized('no', error='invalid_token').message == 'no'


def test_method_not_allowed_lists_the_allowed_methods():
    error = MethodNotAllowed(['GET', 'HEAD', 'POST'])
    assert error.headers == [('Allow', 'GET, HEAD, POST')]
    assert error.message == 'method not allowed here; allowed: GET, HEAD, POST'


def test_retry_after():
    assert TooManyRequests('slow down', 7).headers == [('Retry-After', '7')]
    assert TooManyRequests('slow down', 7).message == 'slow down'
    assert ServiceUnavailable('away').headers == [('Retry-After', '1')]
    assert ServiceUnavailable('away', 30).headers == [('Retry-After', '30')]
    assert ServiceUnavailable('away', 30).message == 'away'


def test_response_helpers():
    page = http.html('<p>x</p>')
    assert (page.body, page.status, page.content_type, page.headers) == (
        '<p>x</p>', 200, 'text/html; charset=utf-8', [])
    page = http.html('<p>x</p>', 404, [('X-A', '1')])
    assert (page.status, page.headers) == (404, [('X-A', '1')])
    data = http.json_response({'a': 1})
    assert (data.body, data.status, data.content_type, data.headers) == ({'a': 1}, 200, 'application/json', [])
    data = http.json_response([1], 201, [('Location', '/x')])
    assert (data.status, data.headers) == (201, [('Location', '/x')])
    plain = http.text('ok\n')
    assert (plain.body, plain.status, plain.content_type, plain.headers) == (
        'ok\n', 200, 'text/plain; charset=utf-8', [])
    plain = http.text('no\n', 503, [('Retry-After', '1')])
    assert (plain.status, plain.headers) == (503, [('Retry-After', '1')])
    empty = http.no_content()
    assert (empty.body, empty.status, empty.content_type, empty.headers) == (b'', 204, None, [])
    assert http.no_content([('X-A', '1')]).headers == [('X-A', '1')]
    default = http.Response('body')
    assert (default.status, default.content_type, default.headers) == (200, 'text/html; charset=utf-8', [])
    assert isinstance(http.Response('b', headers=(('X-A', '1'),)).headers, list)


def test_http_date_is_the_rfc_7231_date_of_this_second(monkeypatch):
    now = [1_700_000_000.25]
    monkeypatch.setattr(http.time, 'time', lambda: now[0])
    monkeypatch.setattr(http, '_now', [0, ''])
    assert http.http_date() == 'Tue, 14 Nov 2023 22:13:20 GMT' == formatdate(1_700_000_000, usegmt=True)
    now[0] = 1_700_000_000.9  # the same second: the same text
    assert http.http_date() == 'Tue, 14 Nov 2023 22:13:20 GMT'
    now[0] = 1_700_000_001.0  # the next one: a new text
    assert http.http_date() == 'Tue, 14 Nov 2023 22:13:21 GMT'


def test_http_date_formats_the_second_it_read(monkeypatch):
    ticks = iter([1_700_000_000.999, 1_700_000_001.0, 1_700_000_001.5])  # the clock moves on between calls
    monkeypatch.setattr(http.time, 'time', lambda: next(ticks))
    monkeypatch.setattr(http, '_now', [0, ''])
    assert http.http_date() == 'Tue, 14 Nov 2023 22:13:20 GMT'


def test_consistency_headers_give_the_token_to_api_clients_and_browsers():
    assert http.consistency_headers('0-1-42') == [
        ('X-Consistency-Token', '0-1-42'),
        ('Set-Cookie', 'wsgiapp_consistency=0-1-42; Max-Age=60; Path=/; Secure; HttpOnly; SameSite=Lax'),
    ]


# The failed-token limiter

def test_failures_up_to_the_limit_then_429_until_the_window_ends(clock):
    failures = FailedTokens(limit=3, window=60)
    failures.check('10.0.0.1')  # never failed: fine
    for _ in range(2):
        failures.add('10.0.0.1')
    failures.check('10.0.0.1')  # two failures, under the limit
    failures.add('10.0.0.1')
    clock.now += 20.5
    error = raised(failures.check, '10.0.0.1')
    assert error.status == 429
    assert error.message == 'too many wrong bearer tokens from this address; try again later'
    assert error.headers == [('Retry-After', '40')]  # 39.5 s left, rounded up
    failures.check('10.0.0.2')  # another address is not affected
    clock.now += 39.4
    assert raised(failures.check, '10.0.0.1').headers == [('Retry-After', '1')]
    clock.now += 0.1  # the window (60 s from the first failure) is over
    failures.check('10.0.0.1')


def test_the_window_starts_at_the_first_failure_and_restarts_after_it_ends(clock):
    failures = FailedTokens(limit=2, window=10)
    failures.add('a')
    clock.now += 9.9
    failures.add('a')  # still the first window: the second failure
    raised(failures.check, 'a')
    clock.now += 0.1  # exactly the end of the window
    failures.check('a')
    failures.add('a')  # a new window, one failure
    failures.check('a')
    clock.now += 5
    failures.add('a')
    assert raised(failures.check, 'a').headers == [('Retry-After', '6')]  # 5 s left, + 1


def test_an_address_never_seen_is_not_limited_even_just_after_boot(clock):
    clock.now = 5.0  # time.monotonic() may start near 0
    FailedTokens(limit=1, window=60).check('never-failed')


def test_defaults_are_ten_failures_a_minute(clock):
    failures = FailedTokens()
    for _ in range(9):
        failures.add('a')
    failures.check('a')
    failures.add('a')
    assert raised(failures.check, 'a').headers == [('Retry-After', '61')]
    clock.now += 60
    failures.check('a')


def test_only_size_addresses_are_remembered_the_oldest_failure_forgotten_first(clock):
    failures = FailedTokens(limit=1, window=60, size=2)
    failures.add('a')
    failures.add('b')
    raised(failures.check, 'a')
    raised(failures.check, 'b')
    failures.add('a')  # a failed again: b is now the oldest
    failures.add('c')
    failures.check('b')  # forgotten
    raised(failures.check, 'a')
    raised(failures.check, 'c')
    assert list(failures.windows) == ['a', 'c']


def test_a_default_sized_limiter_forgets_past_ten_thousand_addresses(clock):
    failures = FailedTokens(limit=1)
    for number in range(10001):
        failures.add(f'10.0.{number // 256}.{number % 256}')
    assert len(failures.windows) == 10000
    failures.check('10.0.0.0')  # the first, forgotten
    raised(failures.check, '10.0.0.1')



class Shared:
    """The shared count (a row per address and window in the database): what it was asked,
    and the totals it answers, or None (the database is away)."""

    def __init__(self, *counts):
        self.counts, self.asked = list(counts), []

    def __call__(self, address, number):
        self.asked.append((address, number))
        return self.counts.pop(0)


@pytest.fixture
def wall(monkeypatch):
    ticking = Clock(6000.5)  # 0.5 s into window number 100 of 60 s
    monkeypatch.setattr(http.time, 'time', ticking)
    return ticking


def test_a_shared_count_under_the_limit_is_remembered_for_this_window(clock, wall):
    shared = Shared(1, 2)
    failures = FailedTokens(limit=2, window=60, shared=shared)
    failures.add('a')
    failures.check('a')
    failures.add('a')  # the total reaches the limit: refused here from now on, until the window ends
    assert shared.asked == [('a', 100), ('a', 100)]
    assert raised(failures.check, 'a').headers == [('Retry-After', '60')]  # 59.5 s left
    clock.now += 59.4
    wall.now += 59.4
    assert raised(failures.check, 'a').headers == [('Retry-After', '1')]
    clock.now += 0.1  # the end of window 100, by the wall clock
    failures.check('a')


def test_a_shared_count_over_the_limit_is_429_at_once(clock, wall):
    wall.now = 6030.0  # half way through window 100
    failures = FailedTokens(limit=2, window=60, shared=Shared(3))
    error = raised(failures.add, 'a')
    assert (error.status, error.headers) == (429, [('Retry-After', '31')])
    assert raised(failures.check, 'a').headers == [('Retry-After', '31')]
    failures.check('b')


def test_the_shared_count_is_taken_as_the_total_not_added_to(clock, wall):
    failures = FailedTokens(limit=3, window=60, shared=Shared(1, 1, 1, 2))
    for _ in range(3):
        failures.add('a')  # another process's count restarted the total: 1, 1, 1
    failures.check('a')
    failures.add('a')
    failures.check('a')  # 2 < 3


def test_when_the_shared_count_fails_this_process_counts_alone(clock, wall):
    shared = Shared(None, None)
    failures = FailedTokens(limit=2, window=60, shared=shared)
    failures.add('a')
    failures.check('a')
    failures.add('a')
    assert raised(failures.check, 'a').headers == [('Retry-After', '61')]  # a window of its own: 60 s left
    assert shared.asked == [('a', 100), ('a', 100)]


def test_a_wrong_token_over_the_shared_limit_is_429_not_401(clock, wall):
    failures = FailedTokens(limit=2, window=60, shared=Shared(3))
    error = raised(request(HTTP_AUTHORIZATION='Bearer wrong', REMOTE_ADDR='a').require_bearer, TOKEN, failures)
    assert error.status == 429


# Request: path, id, query

def test_method_and_path_are_decoded_as_utf8_from_latin1():
    seen = request('PUT', '/caf\xc3\xa9/\xe5\xbc\xa0')
    assert (seen.method, seen.path) == ('PUT', '/café/张')
    assert Request({'REQUEST_METHOD': 'GET'}).path == ''


@pytest.mark.parametrize('raw', ['/\xff', '/caf\xe9', '/\xc3\x28', '/\xed\xa0\x80'])
def test_a_path_that_is_not_utf8_is_none(raw):
    assert request(path=raw).path is None


@pytest.mark.parametrize('given', ['abc123', 'a' * 128, 'A.b_c:d-9', '0123456789abcdef0123456789abcdef'])
def test_a_request_id_from_nginx_is_kept(given):
    assert request(HTTP_X_REQUEST_ID=given).id == given


@pytest.mark.parametrize('given', [None, '', 'a' * 129, 'a b', 'a\nb', 'x<script>', 'é', 'a/b'])
def test_any_other_request_id_is_replaced_by_32_hex_digits(given):
    environ = {} if given is None else {'HTTP_X_REQUEST_ID': given}
    made = request(**environ)
    assert made.id != given
    assert len(made.id) == 32 and set(made.id) <= set('0123456789abcdef')
    assert made.id == made.id  # the same for the whole request
    assert request(**environ).id != made.id


def test_the_request_id_is_made_once_per_request():
    made = request()
    assert made.id is made.id


def test_query_keeps_blank_values_and_repeats():
    seen = request(QUERY_STRING='a=1&b=&a=2&c')
    assert seen.query == {'a': ['1', '2'], 'b': [''], 'c': ['']}
    assert seen.query is seen.query  # parsed once
    assert request().query == {}


@pytest.mark.parametrize('query, value', [('', 10), ('other=5', 10), ('limit=1', 1), ('limit=100', 100),
                                          ('limit=42', 42), ('limit=007', 7)])
def test_int_param_in_range_or_the_default(query, value):
    assert request(QUERY_STRING=query).int_param('limit', 10, 1, 100) == value


@pytest.mark.parametrize('query', ['limit=0', 'limit=101', 'limit=-1', 'limit=+5', 'limit=1.0', 'limit=',
                                   'limit=%201', 'limit=1e2', 'limit=abc', 'limit=' + '9' * 21, 'limit=١'])
def test_int_param_out_of_range_or_not_decimal_is_400(query):
    error = raised(request(QUERY_STRING=query).int_param, 'limit', 10, 1, 100)
    assert error.status == 400
    assert error.message == "query parameter 'limit' must be a decimal integer from 1 to 100"


def test_int_param_given_twice_is_400():
    error = raised(request(QUERY_STRING='after=1&after=2').int_param, 'after', 0, 0, 9)
    assert error.status == 400
    assert error.message == "query parameter 'after' is given more than once"


# Request: the bearer token

class Recorder:
    """A FailedTokens stand-in: what was checked and added, and a check that can refuse."""

    def __init__(self, refuse=False):
        self.checked, self.added, self.refuse = [], [], refuse

    def check(self, address):
        self.checked.append(address)
        if self.refuse:
            raise TooManyRequests('slow', 5)

    def add(self, address):
        self.added.append(address)


@pytest.mark.parametrize('header', ['Bearer right-token', 'bearer right-token', 'BEARER right-token',
                                    '  Bearer   right-token  ', 'Bearer\tright-token'.replace('\t', ' ')])
def test_the_right_bearer_token_passes(header):
    failures = Recorder()
    assert request(HTTP_AUTHORIZATION=header, REMOTE_ADDR='192.0.2.1').require_bearer(TOKEN, failures) is None
    assert (failures.checked, failures.added) == (['192.0.2.1'], [])


def test_a_token_in_utf8_matches_its_bytes_as_wsgi_gives_them():
    token = 'tök-密'
    header = 'Bearer ' + token.encode('utf-8').decode('latin-1')  # PEP 3333: header bytes as latin-1
    request(HTTP_AUTHORIZATION=header).require_bearer(token, Recorder())


@pytest.mark.parametrize('token', [None, ''])
def test_no_token_configured_is_403_whatever_is_sent(token):
    failures = Recorder()
    error = raised(request(HTTP_AUTHORIZATION='Bearer x').require_bearer, token, failures)
    assert error.status == 403
    assert error.message == 'writes are disabled on this server (WSGIAPP_API_TOKEN is not set)'
    assert (failures.checked, failures.added) == ([], [])


@pytest.mark.parametrize('header', [None, '', 'Bearer', 'Bearer ', 'Bearer    ', 'Basic right-token',
                                    'right-token', 'Bearerright-token', 'Token right-token'])
def test_no_bearer_token_is_401_with_a_challenge_and_no_failure_counted(header):
    environ = {} if header is None else {'HTTP_AUTHORIZATION': header}
    failures = Recorder()
    error = raised(request(**environ).require_bearer, TOKEN, failures)
    assert error.status == 401
    assert error.message == 'this request needs an Authorization: Bearer token'
    assert error.headers == [('WWW-Authenticate', 'Bearer realm="wsgiapp"')]
    assert (failures.checked, failures.added) == ([], [])


@pytest.mark.parametrize('given', ['wrong', 'right-token2', 'right-toke', 'RIGHT-TOKEN', '密', 'right token'])
def test_a_wrong_token_is_401_invalid_token_and_counted_for_the_address(given):
    failures = Recorder()
    error = raised(request(HTTP_AUTHORIZATION=f'Bearer {given}', REMOTE_ADDR='192.0.2.9').require_bearer,
                   TOKEN, failures)
    assert error.status == 401
    assert error.message == 'the bearer token is not valid'
    assert error.headers == [('WWW-Authenticate', 'Bearer realm="wsgiapp", error="invalid_token"')]
    assert (failures.checked, failures.added) == (['192.0.2.9'], ['192.0.2.9'])


def test_without_remote_addr_the_address_is_empty():
    failures = Recorder()
    raised(request(HTTP_AUTHORIZATION='Bearer wrong').require_bearer, TOKEN, failures)
    assert (failures.checked, failures.added) == ([''], [''])


def test_a_limited_address_gets_429_before_its_token_is_compared():
    failures = Recorder(refuse=True)
    error = raised(request(HTTP_AUTHORIZATION=f'Bearer {TOKEN}', REMOTE_ADDR='a').require_bearer, TOKEN, failures)
    assert error.status == 429
    assert failures.added == []


def test_wrong_tokens_then_the_limiter_refuses_even_the_right_one(clock):
    failures = FailedTokens(limit=2, window=60)
    for _ in range(2):
        raised(request(HTTP_AUTHORIZATION='Bearer wrong', REMOTE_ADDR='a').require_bearer, TOKEN, failures)
    assert raised(request(HTTP_AUTHORIZATION=f'Bearer {TOKEN}', REMOTE_ADDR='a').require_bearer,
                  TOKEN, failures).status == 429
    request(HTTP_AUTHORIZATION=f'Bearer {TOKEN}', REMOTE_ADDR='b').require_bearer(TOKEN, failures)



@pytest.mark.parametrize('environ, private', [
    ({}, False),
    ({'HTTP_AUTHORIZATION': ''}, True),
    ({'HTTP_AUTHORIZATION': 'Bearer x'}, True),
    ({'HTTP_X_CONSISTENCY_TOKEN': ''}, True),
    ({'HTTP_COOKIE': 'a=b; wsgiapp_consistency=0-1-2'}, True),
    ({'HTTP_COOKIE': 'a=b;\tWSGIAPP_Consistency =0-1-2'}, True),
    ({'HTTP_COOKIE': 'a=wsgiapp_consistency'}, True),  # anywhere in Cookie: nothing guesses how it is read
    ({'HTTP_COOKIE': 'a=b; wsgiapp_consistenc=1'}, False),
    ({'HTTP_COOKIE': ''}, False),
    ({'QUERY_STRING': 'wsgiapp_consistency=1', 'HTTP_X_OTHER': 'x'}, False),
])
def test_private_says_whether_a_credential_or_a_consistency_token_came_with_the_request(environ, private):
    assert request(**environ).private is private


# Request: consistency token and idempotency key

@pytest.mark.parametrize('environ, token', [
    ({}, None),
    ({'HTTP_X_CONSISTENCY_TOKEN': '0-1-5'}, '0-1-5'),
    ({'HTTP_X_CONSISTENCY_TOKEN': ''}, ''),  # sent, though empty: the database layer weighs it
    ({'HTTP_X_CONSISTENCY_TOKEN': '0-1-5', 'HTTP_COOKIE': 'wsgiapp_consistency=0-1-9'}, '0-1-5'),
    ({'HTTP_COOKIE': 'wsgiapp_consistency=0-1-9'}, '0-1-9'),
    ({'HTTP_COOKIE': 'a=b; wsgiapp_consistency=0-1-9; c=d'}, '0-1-9'),
    ({'HTTP_COOKIE': 'a=b;wsgiapp_consistency= "0-1-9" '}, '0-1-9'),
    ({'HTTP_COOKIE': 'wsgiapp_consistency=a=b'}, 'a=b'),
    ({'HTTP_COOKIE': 'wsgiapp_consistency=X0-1-9X'}, 'X0-1-9X'),
    ({'HTTP_COOKIE': 'wsgiapp_consistency'}, None),
    ({'HTTP_COOKIE': 'wsgiapp_consistency=; x=1'}, ''),
    ({'HTTP_COOKIE': 'other_consistency=0-1-9; Wsgiapp_consistency=0-1-8'}, None),
    ({'HTTP_COOKIE': ''}, None),
])
def test_consistency_token_from_the_header_else_the_cookie(environ, token):
    assert request(**environ).consistency_token() == token


@pytest.mark.parametrize('given, key', [
    (None, None),
    ('abc', 'abc'),
    ('  abc  ', 'abc'),
    ('"abc"', 'abc'),
    (' "a:b/c" ', 'a:b/c'),
    ('"', '"'),                     # one quote is a key of one character
    ('"abc', '"abc'),                # not a quoted string: kept as it is
    ('x' * 255, 'x' * 255),
    ('"' + 'x' * 255 + '"', 'x' * 255),
    ('!~', '!~'),
])
def test_idempotency_key(given, key):
    environ = {} if given is None else {'HTTP_IDEMPOTENCY_KEY': given}
    assert request(**environ).idempotency_key() == key


@pytest.mark.parametrize('given', ['', '   ', '""', '" "', 'x' * 256, '"' + 'x' * 256 + '"', 'a b', 'clé',
                                   'a\tb', 'a\x7fb'])
def test_an_idempotency_key_that_is_empty_too_long_or_not_printable_ascii_is_400(given):
    error = raised(request(HTTP_IDEMPOTENCY_KEY=given).idempotency_key)
    assert error.status == 400
    assert error.message == 'Idempotency-Key must be 1 to 255 printable ASCII characters'


# Request: the JSON body

def body_request(body=b'{}', content_type='application/json', length='auto', **environ):
    if content_type is not None:
        environ['CONTENT_TYPE'] = content_type
    if length == 'auto':
        length = str(len(body))
    if length is not None:
        environ['CONTENT_LENGTH'] = length
    return request('POST', '/api/admins', body, **environ)


class Trickle:
    """A wsgi.input that gives at most `step` bytes a read, and says what it was asked."""

    def __init__(self, data, step=3, fail_after=None):
        self.data, self.step, self.fail_after, self.asked = data, step, fail_after, []

    def read(self, size):
        self.asked.append(size)
        if self.fail_after is not None and len(self.asked) > self.fail_after:
            raise OSError('timed out')
        chunk, self.data = self.data[:min(size, self.step)], self.data[min(size, self.step):]
        return chunk


@pytest.mark.parametrize('content_type', ['application/json', 'Application/JSON', ' application/json ',
                                          'application/json; charset=utf-8', 'application/json;charset=UTF-8',
                                          'application/json; charset = utf-8', 'application/json; charset="utf-8"',
                                          'application/json;  charset="UTF-8" '])
def test_a_json_object_is_read(content_type):
    body = '{"name": "Zoë", "n": [1, 2.5, null, true]}'.encode()
    assert body_request(body, content_type).json_object(1024) == {'name': 'Zoë', 'n': [1, 2.5, None, True]}


def test_the_body_is_read_up_to_content_length_only():
    assert body_request(b'{}garbage', length='2').json_object(1024) == {}
    assert body_request(b'{"a": 1}', length=' 8 ').json_object(1024) == {'a': 1}


def test_a_body_in_small_pieces_is_put_together():
    stream = Trickle(b'{"name": "abcdefgh"}')
    assert body_request(stream, length='20').json_object(1024) == {'name': 'abcdefgh'}
    assert stream.asked == [20, 17, 14, 11, 8, 5, 2]


def test_a_body_of_exactly_max_body_bytes_is_accepted():
    body = b'{"a": "' + b'x' * 1015 + b'"}'
    assert len(body) == 1024
    assert body_request(body).json_object(1024) == {'a': 'x' * 1015}


def test_a_content_length_over_max_body_is_413_without_reading():
    stream = Trickle(b'{}')
    error = raised(body_request(stream, length='1025').json_object, 1024)
    assert error.status == 413
    assert error.message == 'the request body is over 1024 bytes'
    assert stream.asked == []


def test_413_comes_before_415_and_415_before_400():
    assert raised(body_request(b'{}', 'text/plain', length='5000').json_object, 1024).status == 413
    assert raised(body_request(b'{}', 'text/plain', length='x').json_object, 1024).status == 415
    assert raised(body_request(b'nope', 'text/plain').json_object, 1024).status == 415


@pytest.mark.parametrize('content_type', [None, '', 'text/plain', 'application/jsonx', 'application/x-json',
                                          'application/json-patch+json', 'text/json', ';application/json',
                                          'multipart/form-data; boundary=x'])
def test_a_body_that_is_not_json_is_415(content_type):
    error = raised(body_request(b'{}', content_type).json_object, 1024)
    assert error.status == 415
    assert error.message == 'the request body must be application/json'


@pytest.mark.parametrize('content_type', ['application/json; charset=latin-1', 'application/json; charset=utf-16',
                                          'application/json; charset=utf8', 'application/json; x=y',
                                          'application/json; charset=utf-8; x=y', 'application/json; utf-8',
                                          'application/json;;'])
def test_a_charset_other_than_utf8_is_415(content_type):
    error = raised(body_request(b'{}', content_type).json_object, 1024)
    assert error.status == 415
    assert error.message == 'the request body must be encoded as utf-8'


@pytest.mark.parametrize('length', ['x', '-1', '1.0', '0x2', '+2', '1 2', '9' * 21])
def test_a_content_length_that_is_not_a_decimal_number_is_400(length):
    error = raised(body_request(b'{}', length=length).json_object, 1024)
    assert error.status == 400
    assert error.message == 'Content-Length is not a decimal number'


@pytest.mark.parametrize('length', [None, '', '  '])
def test_no_content_length_and_no_chunked_body_is_400(length):
    error = raised(body_request(b'{}', length=length).json_object, 1024)
    assert error.status == 400
    assert error.message == 'the request body is empty; send a JSON object'


def test_a_content_length_of_zero_is_an_empty_body_so_not_json():
    error = raised(body_request(b'{}', length='0').json_object, 1024)
    assert (error.status, error.message) == (400, 'the request body is not valid JSON')


def test_a_chunked_body_is_read_to_its_end_up_to_max_body():
    stream = Trickle(b'{"a": 1}', step=5)
    assert body_request(stream, length=None, **{'wsgi.input_terminated': True}).json_object(1024) == {'a': 1}
    assert stream.asked == [1025, 1020, 1017]  # one byte past the limit, until the stream ends
    body = b'{"a": "' + b'x' * 1015 + b'"}'  # exactly 1024 bytes
    assert body_request(body, length=None, **{'wsgi.input_terminated': True}).json_object(1024) == {'a': 'x' * 1015}


def test_a_chunked_body_over_max_body_is_413():
    body = b'{"a": "' + b'x' * 1016 + b'"}'
    error = raised(body_request(body, length=None, **{'wsgi.input_terminated': True}).json_object, 1024)
    assert (error.status, error.message) == (413, 'the request body is over 1024 bytes')


def test_a_body_shorter_than_its_content_length_is_400():
    error = raised(body_request(b'{"a": 1}', length='9').json_object, 1024)
    assert (error.status, error.message) == (400, 'the request body is shorter than its Content-Length')


def test_a_client_that_goes_away_mid_body_is_400():
    error = raised(body_request(Trickle(b'{"name": "abcdefgh"}', fail_after=2), length='20').json_object, 1024)
    assert (error.status, error.message) == (400, 'the request body could not be read')


@pytest.mark.parametrize('body', [b'\xff{}', b'{"a": "\xc3\x28"}', '{"a": "é"}'.encode('latin-1')])
def test_a_body_that_is_not_utf8_is_400(body):
    error = raised(body_request(body).json_object, 1024)
    assert (error.status, error.message) == (400, 'the request body is not valid UTF-8')


@pytest.mark.parametrize('body', [b'{', b'{"a": }', b"{'a': 1}", b'{"a": NaN}', b'{"a": Infinity}',
                                  b'{"a": -Infinity}', b'{} {}', b'[' * 100000 + b']' * 100000])
def test_a_body_that_is_not_json_is_400(body):
    error = raised(body_request(body).json_object, 200000)
    assert (error.status, error.message) == (400, 'the request body is not valid JSON')


@pytest.mark.parametrize('body', [b'[]', b'[{"a": 1}]', b'"x"', b'1', b'null', b'true'])
def test_a_body_that_is_json_but_not_an_object_is_400(body):
    error = raised(body_request(body).json_object, 1024)
    assert (error.status, error.message) == (400, 'the request body must be a JSON object')
