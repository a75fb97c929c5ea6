"""One way to wait: poll a condition until it holds or a deadline passes (cf. mirakuru's
`wait_for`). The launcher, the benchmark and the tests all wait with it, so a timeout
always names what was awaited and the last thing seen."""
import time


class TimedOut(AssertionError):
    """A condition did not hold in time. An AssertionError, so that pytest shows it as a
    failed expectation, with the last observed state in the message."""

    def __init__(self, what, seconds, last):
        super().__init__(f'{what}: not within {seconds:g} s (last seen: {last!r})')
        self.what, self.seconds, self.last = what, seconds, last


def wait_for(condition, seconds, what='condition', interval=0.05):
    """Call `condition()` until it returns something true, and return that; after `seconds`,
    raise TimedOut with the last value it returned (or the exception it last raised)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            last = condition()
        except Exception as error:  # a server not up yet refuses; keep trying until the deadline
            last = error
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise TimedOut(what, seconds, last)
        time.sleep(interval)
