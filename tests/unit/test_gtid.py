"""replicas.gtid_position: which consistency tokens may reach MASTER_GTID_WAIT, without a server."""
import pytest

from wsgiapp.replicas import MAX_TOKEN, gtid_position


@pytest.mark.parametrize('token, position', [
    ('0-1-42', '0-1-42'),
    ('0-1-1,1-2-7', '0-1-1,1-2-7'),                                   # one GTID per domain
    ('  0-1-1 , 1-2-7 ', '0-1-1,1-2-7'),                              # spaces around each go
    (f'{2**32 - 1}-{2**32 - 1}-{2**64 - 1}', f'{2**32 - 1}-{2**32 - 1}-{2**64 - 1}'),  # the largest
    ('0-0-0', '0-0-0'),
])
def test_valid(token, position):
    assert gtid_position(token) == position


@pytest.mark.parametrize('token', [
    '', ' ', ',', '0-1-1,',                                           # empty, or an empty part
    'garbage', '0-1', '0-1-x', '0-1-1-1', '-1-1-1', '0--1-1', '0-1-1;0-1-2',
    "0-1-1' OR 1=1 --", '0 -1-1', '0-1 1',
    '0-1-1,0-2-2',                                                    # the same domain twice
    f'{2**32}-1-1', f'0-{2**32}-1', f'0-1-{2**64}',                   # out of bounds
    '12345678901-1-1', '0-1-123456789012345678901',                   # too many digits
    '\u0660-\u0661-\u0662', '0-1-\uff11',                                # digits of other scripts
])
def test_refused(token):
    assert gtid_position(token) is None


def test_a_token_over_512_characters_is_refused_even_if_valid():
    def token_of_length(length):
        parts = [f'{domain}-1-1' for domain in range(200)]
        token = ','.join(parts)
        while len(token) > length:  # drop whole GTIDs, then pad the last sequence number
            parts.pop()
            token = ','.join(parts)
        return token[:-1] + '1' * (length - len(token)) + '1'
    longest = token_of_length(MAX_TOKEN)
    assert len(longest) == 512 and gtid_position(longest) == longest
    too_long = token_of_length(MAX_TOKEN + 1)
    assert len(too_long) == 513 and gtid_position(too_long) is None
