"""Which code this is: a hash of the application package's own files (the launcher, bench and
tests live outside it), computed once at import.

Every response carries it (X-App-Version) and /healthz shows it, so a rolling deploy can
be watched host by host. The launcher names each release directory by the same hash."""
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def code_version(package=PACKAGE):
    """12 hex digits over every .py and .sql file of the package, by relative path."""
    digest = hashlib.blake2b(digest_size=6)
    for path in sorted(p for p in package.rglob('*') if p.suffix in ('.py', '.sql') and p.is_file()):
        digest.update(str(path.relative_to(package)).encode() + b'\0' + path.read_bytes() + b'\0')
    return digest.hexdigest()


VERSION = code_version()
