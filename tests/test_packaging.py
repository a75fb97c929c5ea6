"""What `pip install .` puts on a server, and what X-App-Version is computed from: the
application's own code, never the launcher, the benchmark or the tests."""
import shutil
import subprocess
import sys
import zipfile

from launcher.process import ROOT


def tracked_copy(target):
    """The checkout's tracked files, as a fresh clone has them."""
    names = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, names.decode().split('\0')):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


def app_version(checkout):
    """X-App-Version as the app of `checkout` computes it at import."""
    return subprocess.run([sys.executable, '-c', 'from wsgiapp.version import VERSION; print(VERSION)'],
                          cwd=checkout, capture_output=True, text=True, check=True).stdout.strip()


def test_the_wheel_holds_the_application_alone(tmp_path):
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation',
                    '-w', str(tmp_path / 'dist'), str(tracked_copy(tmp_path / 'src'))], check=True)
    [wheel] = (tmp_path / 'dist').glob('wsgiapp-*.whl')
    packages = {name.split('/')[0] for name in zipfile.ZipFile(wheel).namelist() if '.dist-info' not in name}
    assert packages == {'wsgiapp'}
    names = zipfile.ZipFile(wheel).namelist()
    assert 'wsgiapp/schema.sql' in names and 'wsgiapp/app.py' in names


def test_the_version_moves_with_the_applications_code_only(tmp_path):
    checkout = tracked_copy(tmp_path / 'src')
    before = app_version(checkout)
    assert len(before) == 12
    for other in ('launcher/__main__.py', 'bench/run.py', 'tests/conftest.py', 'conf/uwsgi.ini', 'README.rst'):
        with open(checkout / other, 'a') as changed:
            changed.write('\n# an edit\n')
    assert app_version(checkout) == before
    with open(checkout / 'wsgiapp' / 'views.py', 'a') as changed:
        changed.write('\n# an edit\n')
    assert app_version(checkout) != before
