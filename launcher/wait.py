"""One way to wait: poll a condition until it holds or a deadline passes (cf. mirakuru's
`wait_for`). The launcher, the benchmark and the tests all wait with it, so a timeout
always names what was awaited and the last thing seen."""
import time


class TimedOut(AssertionError, RuntimeError):
    """A condition did not hold in time. An AssertionError, so that pytest shows it as a
    failed expectation, with the last observed state in the message; a RuntimeError, so that
    a server the launcher waited for in vain is reported as any other that failed to start
    (`make run failed: ...`)."""

    def __init__(self, what, seconds, last, detail=''):
        super().__init__(f'{what}: not within {seconds:g} s (last seen: {last!r})' + (f'\n{detail}' if detail else ''))
        self.what, self.seconds, self.last = what, seconds, last


def wait_for(condition, seconds, what='condition', interval=0.05, detail=None):
    """Call `condition()` until it returns something true, and return that; after `seconds`,
    raise TimedOut with the last value it returned (or the exception it last raised: an
    AssertionError is not waited out, it is raised at once), and
    what `detail()` says, when given (a server's log tail, say)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            last = condition()
        except AssertionError:  # a broken expectation inside the condition fails at once
            raise
        except Exception as error:  # a server not up yet refuses; keep trying until the deadline
            last = error
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise TimedOut(what, seconds, last, detail() if detail else '')
        time.sleep(interval)
