"""A fleet's history in PostgreSQL: every node's runs, accuracy and throughput, one transaction a run.

Reached by a ``postgresql://`` URL, or by libpq's own environment when the
store is written ``postgresql:`` (PGHOST, PGPORT, PGDATABASE, PGUSER,
PGSERVICE, ~/.pgpass): the client is psycopg 3 (``pip install
pplgate[postgres]``).  Every value reaches SQL as a parameter.

The schema carries its version (``pplgate_schema``): a pplgate that finds
an older one upgrades it in one transaction, one that finds a newer one
refuses.  A run is kept whole or not at all: its row, its benchmarks and its
accuracy results in one transaction, under its unique run id, so nodes
recording at the same second never mix, and a run sent twice is kept once.
What the history's judging reads (per benchmark: the test, its machine, the
median and spread, the rounds and tokens, the extra_info) has columns of its
own, indexed by test and machine.
"""

from __future__ import annotations

import re

from pplgate.errors import PplgateError
from pplgate.redact import printable, redact_url
from pplgate.store import KEY, Acceptance, StoredRun

# Each step takes the schema from the version before it to its own; applied in order, in one transaction.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE pplgate_schema (version integer NOT NULL);
        INSERT INTO pplgate_schema VALUES (0);
        CREATE TABLE pplgate_runs (
            seq bigserial PRIMARY KEY,
            run_id text NOT NULL UNIQUE,
            node text NOT NULL,
            datetime text NOT NULL,
            commit_id text NOT NULL,
            saved_at timestamptz NOT NULL DEFAULT now(),
            head jsonb NOT NULL
        );
        CREATE TABLE pplgate_benchmarks (
            run_seq bigint NOT NULL REFERENCES pplgate_runs (seq) ON DELETE CASCADE,
            position integer NOT NULL,
            test text,
            bench jsonb NOT NULL,
            PRIMARY KEY (run_seq, position)
        );
        CREATE TABLE pplgate_accuracy (
            run_seq bigint NOT NULL REFERENCES pplgate_runs (seq) ON DELETE CASCADE,
            position integer NOT NULL,
            test text NOT NULL,
            verdict text NOT NULL,
            perplexity double precision,
            record jsonb NOT NULL,
            PRIMARY KEY (run_seq, position)
        );
        """,
    ),
    (
        2,
        """
        CREATE INDEX pplgate_runs_node ON pplgate_runs (node, seq);
        CREATE INDEX pplgate_benchmarks_test ON pplgate_benchmarks (test, run_seq);
        CREATE INDEX pplgate_accuracy_test ON pplgate_accuracy (test, run_seq);
        CREATE TABLE pplgate_acceptances (
            id bigserial PRIMARY KEY,
            kind text NOT NULL,
            test text NOT NULL,
            node text NOT NULL,
            since text NOT NULL,
            who text NOT NULL,
            at text NOT NULL,
            why text NOT NULL
        );
        """,
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
INSTALL = "install the PostgreSQL client with 'python -m pip install pplgate[postgres]' (psycopg 3)"


def _driver():
    try:
        import psycopg
    except ImportError as err:
        raise PplgateError(
            f"a postgresql:// store needs psycopg, which this Python cannot import ({err}): {INSTALL}."
        ) from None
    return psycopg


def _label(spec: str) -> str:
    """The store as messages name it: its user info and every secret-bearing parameter masked."""
    return "PostgreSQL (libpq's environment)" if spec.strip().lower() == "postgresql:" else redact_url(spec)


class StoreUnreachable(PplgateError):
    """The server is down, refuses the login, runs out of room or goes away: the run is kept on the node instead."""


class PostgresStore:
    def __init__(self, spec: str):
        self.spec = spec.strip()
        self.label = _label(self.spec)
        self._conn = None

    # Connection and schema.
    def __enter__(self) -> PostgresStore:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self):
        if self._conn is not None:
            return self._conn
        psycopg = _driver()
        conninfo = "" if self.spec.lower() == "postgresql:" else self.spec
        try:
            self._conn = psycopg.connect(conninfo, connect_timeout=10, application_name="pplgate", autocommit=True)
        except psycopg.Error as err:
            raise StoreUnreachable(f"cannot connect to {self.label} ({_first_line(err, self.spec)})") from None
        self._upgrade()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _upgrade(self) -> None:
        """The schema at SCHEMA_VERSION: made or upgraded in one transaction; a newer one is refused."""
        conn = self._conn
        assert conn is not None
        with self._guard("reading the schema of"), conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(7061726)")  # one pplgate at a time creates or upgrades it
            exists = conn.execute("SELECT to_regclass('pplgate_schema') IS NOT NULL").fetchone()[0]
            version = conn.execute("SELECT version FROM pplgate_schema").fetchone()[0] if exists else None
            if version is not None and version > SCHEMA_VERSION:
                raise PplgateError(
                    f"{self.label} holds pplgate's schema version {version}, newer than this pplgate's "
                    f"{SCHEMA_VERSION}: upgrade pplgate on this node (every node writing one store runs the same "
                    "version or newer)."
                )
            for step, sql in MIGRATIONS:
                if version is None or step > version:
                    conn.execute(sql)
                    conn.execute("UPDATE pplgate_schema SET version = %s", (step,))
                    version = step

    def version(self) -> int:
        return self.connect().execute("SELECT version FROM pplgate_schema").fetchone()[0]

    def _guard(self, doing: str):
        return _Guard(self, doing)

    # Writing.
    def has_run(self, run_id: str) -> bool:
        with self._guard("reading"):
            return (
                self.connect().execute("SELECT 1 FROM pplgate_runs WHERE run_id = %s", (run_id,)).fetchone() is not None
            )

    def save(self, data: dict) -> str:
        """One run in one transaction; a run already there (the same run id) is left as it is."""
        from psycopg.types.json import Jsonb

        conn = self.connect()
        run_id = str(data[KEY]["run_id"])
        head = {k: v for k, v in data.items() if k != "benchmarks"}
        node = str((data.get("machine_info") or {}).get("node") or "")
        commit = str((data.get("commit_info") or {}).get("id") or "")
        with self._guard("writing a run to"), conn.transaction():
            row = conn.execute(
                "INSERT INTO pplgate_runs (run_id, node, datetime, commit_id, head) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (run_id) DO NOTHING RETURNING seq",
                (run_id, node, str(data.get("datetime") or ""), commit, Jsonb(head)),
            ).fetchone()
            if row is None:
                return f"{self.label}, run {run_id} (there already)"
            seq = row[0]
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO pplgate_benchmarks (run_seq, position, test, bench) VALUES (%s, %s, %s, %s)",
                    [(seq, i, _test_of(bench), Jsonb(bench)) for i, bench in enumerate(data.get("benchmarks") or [])],
                )
                cur.executemany(
                    "INSERT INTO pplgate_accuracy (run_seq, position, test, verdict, perplexity, record) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    [
                        (seq, i, str(r.get("id")), str(r.get("verdict")), _float(r.get("perplexity")), Jsonb(r))
                        for i, r in enumerate(data[KEY].get("accuracy") or [])
                    ],
                )
        return f"{self.label}, run {seq:04d}"

    # Reading.
    def is_empty(self) -> bool:
        with self._guard("reading"):
            return self.connect().execute("SELECT NOT EXISTS (SELECT 1 FROM pplgate_runs)").fetchone()[0]

    def runs(self) -> tuple[list[StoredRun], list[tuple[str, str]]]:
        """Every run whole, oldest first (for export)."""
        conn = self.connect()
        with self._guard("reading"):
            heads = conn.execute("SELECT seq, run_id, head FROM pplgate_runs ORDER BY seq").fetchall()
            benches: dict[int, list] = {}
            for seq, bench in conn.execute("SELECT run_seq, bench FROM pplgate_benchmarks ORDER BY run_seq, position"):
                benches.setdefault(seq, []).append(bench)
        runs = []
        for seq, _run_id, head in heads:
            runs.append(
                StoredRun(f"{seq:04d}", {**head, "benchmarks": benches.get(seq, [])}, f"{self.label}, run {seq:04d}")
            )
        return runs, []

    def timing_rows(self):
        """(seq, datetime, commit_info id, dirty, node, bench) of every benchmark that is pplgate's, oldest first."""
        conn = self.connect()
        with self._guard("reading"):
            return conn.execute(
                "SELECT r.seq, r.datetime, r.head -> 'commit_info', r.node, b.bench "
                "FROM pplgate_benchmarks b JOIN pplgate_runs r ON r.seq = b.run_seq "
                "WHERE b.test IS NOT NULL ORDER BY r.seq, b.position"
            ).fetchall()

    def accuracy_rows(self):
        """(seq, datetime, commit_info, node, record) of every accuracy result, oldest first."""
        conn = self.connect()
        with self._guard("reading"):
            return conn.execute(
                "SELECT r.seq, r.datetime, r.head -> 'commit_info', r.node, a.record "
                "FROM pplgate_accuracy a JOIN pplgate_runs r ON r.seq = a.run_seq ORDER BY r.seq, a.position"
            ).fetchall()

    def acceptances(self) -> list[Acceptance]:
        conn = self.connect()
        with self._guard("reading"):
            rows = conn.execute(
                "SELECT kind, test, node, since, who, at, why FROM pplgate_acceptances ORDER BY id"
            ).fetchall()
        return [Acceptance(*row) for row in rows]

    def accept(self, acceptance: Acceptance) -> str:
        conn = self.connect()
        with self._guard("writing an acceptance to"), conn.transaction():
            conn.execute(
                "INSERT INTO pplgate_acceptances (kind, test, node, since, who, at, why) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                tuple(acceptance.record().values()),
            )
        return self.label


class _Guard:
    """Turns the driver's errors into one sentence naming the store, never its password."""

    def __init__(self, store: PostgresStore, doing: str):
        self.store, self.doing = store, doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> None:
        if err is None:
            return
        psycopg = _driver()
        if isinstance(err, psycopg.Error):
            if isinstance(err, psycopg.OperationalError):
                self.store.close()  # a lost connection is not used again
            raise StoreUnreachable(
                f"{self.doing} {self.store.label} failed ({_first_line(err, self.store.spec)})"
            ) from None


def _first_line(err: Exception, spec: str) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    # libpq quotes its connection string in some messages: no password may leave.
    password = re.search(r"://[^:/@]*:([^@]*)@", spec)
    if password and password.group(1):
        text = text.replace(password.group(1), "***")
    return printable(text)


def _test_of(bench: dict) -> str | None:
    extra = bench.get("extra_info") if isinstance(bench, dict) else None
    if not isinstance(extra, dict):
        return None
    test = extra.get("test")
    return test if isinstance(test, str) and "tokens" in extra else None


def _float(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
