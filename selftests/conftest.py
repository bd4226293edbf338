"""Fixtures of the suite's own tests: the shared offline data, a built tiny model, the CLI in-process, a scratch gate.

Tests named after the module they test.  Tests that need a process of their
own (exit codes, signals, an environment read at import) or a pytest run
(pytester) are marked ``e2e``; ``pytest selftests -m "not e2e"`` is the
inner loop.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pplgate.data import load_tokens
from pplgate.models import resolve_model
from scratch import write_case

# Loaded here once, for every module of the suite (an initial conftest may name plugins).
pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs a process or a pytest session of its own (slow); the inner loop is -m 'not e2e'")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A pytest run inside the test is end to end whatever its module says.
    for item in items:
        if "pytester" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


@dataclass(frozen=True)
class Ran:
    """What an in-process ``pplgate.cli.main`` run gave: its exit status and what it printed."""

    code: int
    out: str
    err: str

    @property
    def error(self) -> str:
        """The one ``pplgate: error:`` line of a failed run (no traceback, nothing else said as an error)."""
        lines = [line for line in self.err.splitlines() if line.startswith("pplgate: error:")]
        assert self.code == 1 and len(lines) == 1 and "Traceback" not in self.err, (self.code, self.err)
        return lines[0]

    @property
    def report(self) -> dict:
        import json

        return json.loads(self.out.split("Final report:\n", 1)[1])


@pytest.fixture
def cli(capsys):
    """``cli(*args)``: ``python -m pplgate *args`` in this process; argparse's usage errors give code 2."""
    from pplgate.cli import main

    def run(*args: str) -> Ran:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


def replaced(args: list[str], option: str, value: str) -> list[str]:
    """``args`` with the value after ``option`` replaced."""
    args = list(args)
    args[args.index(option) + 1] = value
    return args


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: the wikitext test split and GPT-2's tokenizer files."""
    if not (SHARED_DATA / "wikitext").is_dir() or not (SHARED_DATA / "gpt2").is_dir():
        pytest.fail(f"the offline data is missing: {SHARED_DATA} must hold wikitext/ and gpt2/ (see README).", pytrace=False)
    return SHARED_DATA


@pytest.fixture(scope="session")
def dataset_dir(shared_data: Path) -> str:
    return str(shared_data / "wikitext")


@pytest.fixture(scope="session")
def tokenizer_dir(shared_data: Path) -> str:
    return str(shared_data / "gpt2")


@pytest.fixture(scope="session")
def token_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("token-cache")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model")


@pytest.fixture(scope="session")
def tokens(dataset_dir, tokenizer_dir, token_cache):
    return load_tokens(dataset_dir, tokenizer_dir, token_cache)


@pytest.fixture(scope="session")
def blocks(tokens):
    """The shared copy's 274 blocks, the vendor's grouping."""
    return tokens.blocks()


@pytest.fixture(scope="session")
def block_matrix(blocks):
    """[16, 1024] int64: the first 16 blocks, as sessions take them."""
    return blocks.head(16).matrix()


@pytest.fixture
def base_args(dataset_dir, tokenizer_dir, token_cache, model_dir) -> list[str]:
    """The CLI's arguments for builtin:tiny on the offline data."""
    return ["--model", "builtin:tiny", "--dataset", dataset_dir, "--tokenizer", tokenizer_dir,
            "--cache-dir", str(token_cache), "--model-dir", str(model_dir), "--no-progress"]


@pytest.fixture(scope="session")
def tiny_model(model_dir) -> Path:
    return resolve_model("builtin:tiny", model_dir)


@pytest.fixture(scope="session")
def saved_runs(tmp_path_factory, dataset_dir, tokenizer_dir, token_cache, model_dir):
    """Two-block runs (blocks of 512) of the tiny model: fp32 and fp16, each against a cpu-fp32 reference, losses saved."""
    import json

    from pplgate.cli import main

    folder = tmp_path_factory.mktemp("runs")
    out = {}
    for precision in ("fp32", "fp16"):
        report = folder / f"{precision}.json"
        assert main(["--model", "builtin:tiny", "--model-dir", str(model_dir), "--dataset", dataset_dir, "--tokenizer", tokenizer_dir,
                     "--cache-dir", str(token_cache), "--max-blocks", "2", "--block-size", "512", "--precision", precision, "--reference",
                     "--save-losses", str(folder / f"{precision}.npz"), "--report-json", str(report), "--no-progress"]) == 0
        out[precision] = (json.loads(report.read_text()), folder / f"{precision}.npz")
    return out


class ModelServer:
    """A real HTTP server on 127.0.0.1 serving one body in good and broken ways.

    The first path segment picks the behaviour:
      ok        the whole body; honours Range (206) so broken downloads resume
      norange   the whole body, ignoring Range
      dropped   half the body, then the connection closes; whole after the first request
      short     announces the full Content-Length, sends less, closes
      slow      half the body, then a pause longer than the client's timeout
      throttled the whole body, slowly (0.5 s), so concurrent clients overlap
      status-N  HTTP status N
      auth      the whole body to Basic auth as user:s3cret-pw only, 401 otherwise
      html      an HTML page with status 200, as a login or expired-link page is
      trickle   announces the body, then sends a byte every 0.05 s
      ignores-if-range  honours Range even when If-Range names another version (a broken server)
      novalidator       as ok, without ETag or Last-Modified
      length-X  Content-Length: X (abc, -5), then 10 bytes
      unsized   the whole body without Content-Length; unsized-cut: half of it
      lastmod-only      Last-Modified (of the body as it is now) and no ETag, honouring Range whatever If-Range says
      from-zero         a Range is answered 206 with the whole body (Content-Range bytes 0-...)
      under-length      Content-Length half the body, then all of it
      two-lengths       two different Content-Length headers
      slow-headers      the status line, then a header byte every 0.05 s, for ever
      redirect          302 to ``redirect_to``

    Each request's Authorization header is kept in ``authorizations``.

    Every answer but novalidator's carries a strong ETag of the body as it is
    now (a test may change ``body``), and a Range under an If-Range that is not
    that ETag is answered with the whole body, as RFC 9110 says.
    """

    def __init__(self, body: bytes):
        import http.server
        import threading

        self.body = body
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.if_ranges: list[str | None] = []  # the If-Range header of each request
        self.authorizations: list[str | None] = []  # the Authorization header of each request
        self.redirect_to: str | None = None  # where the redirect mode sends clients
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                server.if_ranges.append(self.headers.get("If-Range"))
                server.authorizations.append(self.headers.get("Authorization"))
                mode = self.path.split("/")[1]
                body = server.body
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                modified = server.modified(body)
                if rng and mode not in ("ignores-if-range", "novalidator", "lastmod-only") and self.headers.get("If-Range") != etag:
                    rng = None  # not the version the client holds the start of: the whole body

                def send_response(code, _send=self.send_response):
                    _send(code)
                    if mode not in ("novalidator", "lastmod-only"):
                        self.send_header("ETag", etag)
                    if mode != "novalidator":
                        self.send_header("Last-Modified", modified)

                if mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", server.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if mode == "slow-headers":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    try:
                        while True:
                            for byte in b"X-Padding: a\r\n":
                                self.wfile.write(bytes([byte]))
                                self.wfile.flush()
                                time.sleep(0.05)
                    except OSError:  # the client gave up
                        self.close_connection = True
                        return
                if mode == "two-lengths":
                    send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Content-Length", str(len(body) // 2))
                    self.end_headers()
                    self.wfile.write(body)
                    self.close_connection = True
                    return
                if mode == "under-length":
                    send_response(200)
                    self.send_header("Content-Length", str(len(body) // 2))
                    self.end_headers()
                    self.wfile.write(body)
                    self.close_connection = True
                    return
                if mode == "from-zero" and rng:
                    send_response(206)
                    self.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(body)}")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return

                if mode in ("unsized", "unsized-cut"):  # no Content-Length: the closed connection ends the body
                    send_response(200)
                    self.end_headers()
                    self.wfile.write(body if mode == "unsized" else body[: len(body) // 2])
                    self.close_connection = True
                    return
                if mode.startswith("length-"):  # a Content-Length that is no size
                    send_response(200)
                    self.send_header("Content-Length", mode[len("length-"):])
                    self.end_headers()
                    self.wfile.write(body[:10])
                    self.close_connection = True
                    return
                if mode.startswith("status-"):
                    self.send_error(int(mode[len("status-"):]))
                    return
                if mode == "auth" and self.headers.get("Authorization") != "Basic " + base64.b64encode(b"user:s3cret-pw").decode():
                    self.send_error(401)
                    return
                if mode == "html":
                    page = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                first = sum(1 for p, _ in server.requests if p == self.path) == 1
                if mode in ("dropped", "short", "slow") and (first or mode != "dropped"):
                    send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    if mode == "slow":
                        self.wfile.flush()
                        time.sleep(2.0)
                    self.close_connection = True
                    return
                start = int(rng[len("bytes="):].split("-")[0]) if rng and mode != "norange" else 0
                send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if mode == "trickle":
                    for i in range(start, len(body)):
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(0.05)
                elif mode == "throttled":
                    for i in range(start, len(body), len(body) // 10 + 1):
                        self.wfile.write(body[i : i + len(body) // 10 + 1])
                        time.sleep(0.05)
                else:
                    self.wfile.write(body[start:])

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # clients that give up mid-body are what these tests make

        self.httpd = Server(("127.0.0.1", 0), Handler)
        # A short poll: shutdown() waits for it, once a test.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @staticmethod
    def modified(body: bytes) -> str:
        """The Last-Modified of a version of the body: another body was modified at another second."""
        return f"Tue, 01 Dec 2026 00:00:{hashlib.sha256(body).digest()[0] % 60:02d} GMT"

    def url(self, mode: str, name: str = "model.onnx") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{mode}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def model_server(tiny_model):
    """Serves the tiny model's bytes over HTTP on 127.0.0.1."""
    server = ModelServer(tiny_model.read_bytes())
    yield server
    server.close()


# The commit a stand-in hub repository is cached at.
STAND_IN_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="session")
def hub_stand_in(tmp_path_factory, shared_data: Path) -> Path:
    """An HF_HOME whose cache holds Salesforce/wikitext and openai-community/gpt2 as the hub leaves them.

    With HF_HUB_OFFLINE=1, huggingface_hub's own snapshot_download and
    hf_hub_download serve these repositories from it, as they would serve a
    connected machine's cache: the hub's code runs, no network is asked.
    """
    import shutil

    home = tmp_path_factory.mktemp("hf")
    repos = {
        "datasets--Salesforce--wikitext": shared_data / "wikitext",
        "models--openai-community--gpt2": shared_data / "gpt2",
    }
    for repo, source in repos.items():
        snapshot = home / "hub" / repo / "snapshots" / STAND_IN_COMMIT
        shutil.copytree(source, snapshot, ignore=shutil.ignore_patterns("SHA256SUMS"))
        (home / "hub" / repo / "refs").mkdir()
        (home / "hub" / repo / "refs" / "main").write_text(STAND_IN_COMMIT)
    return home


class ScratchGate:
    """A scratch gate project in pytester's folder: golden/, pytest.ini, the gate's test modules, and how to run it."""

    def __init__(self, pytester: pytest.Pytester, source_args: list[str]):
        self.pytester = pytester
        self.path = pytester.path
        self.golden = pytester.path / "golden"
        self.golden.mkdir()
        self.source_args = source_args  # --dataset, --tokenizer, --model-dir, --gate-cache-dir of the suite's offline copies
        self.ini()
        self.tests("test_perplexity.py")

    def ini(self, devices: str = "cpu gcu", precisions: str = "fp32", extra: str = "") -> None:
        self.pytester.makeini(f"[pytest]\npplgate_devices = {devices}\npplgate_precisions = {precisions}\n{extra}")

    def tests(self, *modules: str, conftest: str = 'pytest_plugins = ["pytest_pplgate.plugin"]') -> None:
        """The gate's own test modules of tests/, as test_gate.py (accuracy) and test_bench.py (throughput)."""
        names = {"test_perplexity.py": "test_gate", "test_throughput.py": "test_bench"}
        self.pytester.makeconftest(conftest)
        self.pytester.makepyfile(**{names[m]: (ROOT / "tests" / m).read_text() for m in modules})

    def case(self, expected: dict, model: str = "builtin:tiny", name: str = "mini", max_blocks: int = 2, **top) -> Path:
        return write_case(self.golden, expected, model, name, max_blocks, **top)

    def run(self, *args: str, subprocess: bool = False, sources: bool = True) -> pytest.RunResult:
        # In a subprocess where the outcome is an exit status pytester's in-process run would report as an internal error.
        runner = self.pytester.runpytest_subprocess if subprocess else self.pytester.runpytest
        return runner(*(self.source_args if sources else self.source_args[2:]), "-p", "no:cacheprovider", *args)


def wikitext_folder(folder: Path, texts) -> Path:
    """A dataset folder laid out like Salesforce/wikitext whose test split holds ``texts`` (a pyarrow array or a list)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "wikitext-2-raw-v1").mkdir(parents=True)
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: wikitext-2-raw-v1\n  data_files:\n  - split: test\n"
                                      "    path: wikitext-2-raw-v1/test-*\n---\n")
    pq.write_table(pa.table({"text": texts}), folder / "wikitext-2-raw-v1" / "test-00000-of-00001.parquet")
    return folder


@pytest.fixture(autouse=True)
def _extension_modules_before_pytester(request) -> None:
    """Only where a pytest run inside the test will restore sys.modules after it: elsewhere nothing to pay for."""
    if "pytester" in request.fixturenames:
        request.getfixturevalue("extension_modules")


@pytest.fixture(scope="session")
def extension_modules() -> None:
    """The libraries with compiled extensions, imported once for the session.

    pytester restores sys.modules after each in-process run, dropping what was
    imported since it started, and none of these can be imported twice in
    one process: datasets (pyarrow refuses to register its types again) and
    onnx (nanobind aborts the whole process, exit 134, on its enumerations).
    Set up before any test's pytester (``_extension_modules_before_pytester``),
    so these stay, whichever test file or selection runs.
    """
    import datasets  # noqa: F401
    import onnx  # noqa: F401
    import onnx.reference  # noqa: F401
    import onnxruntime  # noqa: F401

    from pplgate.data import import_transformers

    import_transformers()  # as pplgate imports it: without its advice that PyTorch is absent


@pytest.fixture
def scratch_gate(extension_modules, pytester, dataset_dir, tokenizer_dir, model_dir, token_cache, tokens) -> ScratchGate:
    """The one scratch project of the plugin's tests (a 2-block case on the tiny model is ``scratch_gate.case({})``)."""
    return ScratchGate(pytester, [f"--gate-dataset={dataset_dir}", f"--gate-tokenizer={tokenizer_dir}", f"--gate-model-dir={model_dir}",
                                  f"--gate-cache-dir={token_cache}"])


POSTGRES_ENV = "PPLGATE_TEST_POSTGRES"  # a libpq URL of a server the tests may create databases on (.ci/run sets it)


def _postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs, where they are installed (Debian's layout, or on PATH)."""
    import shutil

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _unavailable(why: str):
    """No server: a skip with a sentence where a developer has none, a failure in CI, which must test the store."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI must run the PostgreSQL tests: .ci/run starts a server and sets ${POSTGRES_ENV})")
    pytest.skip(why)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server: $PPLGATE_TEST_POSTGRES's, else one this session starts from the installed binaries (as the
    postgres user when run as root: the server refuses root), on a socket in a temporary folder, stopped at the end."""
    import subprocess

    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed: 'python -m pip install -r requirements-postgres.txt' to test the PostgreSQL store")
    if os.environ.get(POSTGRES_ENV):
        yield os.environ[POSTGRES_ENV]
        return
    bindir = _postgres_bin()
    if bindir is None:
        _unavailable("PostgreSQL's server programs (initdb, pg_ctl) are not installed: the PostgreSQL store is not tested")
    import shutil
    import tempfile

    # Not under pytest's own temporary folder, which only its owner may enter: the server's user must.
    folder = Path(tempfile.mkdtemp(prefix="pplgate-postgres-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True)
    ctl = [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log")]
    subprocess.run([*ctl, "-o", f"-k {folder} -c listen_addresses='' -c fsync=off", "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@/postgres?host={folder}"
    finally:
        subprocess.run([*ctl, "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A database of its own for one test, on the test server, dropped after it."""
    import uuid

    import psycopg

    name = f"pplgate_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, query = postgres_server.partition("?")
    url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    yield url
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by its driver (Debian's chromium and chromium-driver, .ci/run installs them) through
    selenium: a real browser opens the history page.  Where none is installed, a skip with a sentence; in CI, a
    failure."""
    import shutil

    def missing(why: str):
        if os.environ.get("CI"):
            pytest.fail(f"{why} (CI must open the page in a real browser: .ci/run installs chromium and chromium-driver)")
        pytest.skip(why)

    binary = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        missing("no headless browser here: 'apt-get install chromium chromium-driver' to test the history page")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed: 'python -m pip install -r requirements.txt' to test the history page")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    yield chrome
    chrome.quit()
