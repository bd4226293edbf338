"""A fleet's history in PostgreSQL: every node's runs, accuracy and throughput, one transaction a run.

Reached by a ``postgresql://`` URL, or by libpq's own environment when the
store is written ``postgresql:`` (PGHOST, PGPORT, PGDATABASE, PGUSER,
PGSERVICE, ~/.pgpass): the client is psycopg 3 (``pip install -r
requirements-postgres.txt``, the extra ``pplgate[postgres]``).  Every value reaches SQL as a parameter.

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

import json
import re

from pplgate.errors import PplgateError
from pplgate.redact import printable, redact_url
from pplgate.store import KEY, Acceptance, StoredRun

# What judging reads of a run, as columns of their own (decoding a whole JSON object a run was most of the time of
# 100,000): (name, SQL type).  JSON types hold a value as JSON text, read back as the folder's runs hold it.
BENCH_COLUMNS = (
    ("test", "text"),
    ("median", "float8"),
    ("stddev", "float8"),
    ("rounds", "integer"),
    ("tokens", "bigint"),
    ("perplexity", "float8"),
    ("model_sha256", "text"),
    ("blocks_sha256", "text"),
    ("onnxruntime", "text"),
    ("onnxruntime_distribution", "text"),
    ("batch_size", "json"),
    ("intra_op_threads", "json"),
    ("provider_options", "json"),
    ("blocks", "json"),
    ("scoring", "json"),
    ("providers", "json"),
    ("driver", "json"),
    ("method", "json"),
    ("under_load", "boolean"),
    ("others_cpu_share", "float8"),
)
ACCURACY_COLUMNS = (
    ("id", "text"),
    ("verdict", "text"),
    ("perplexity", "json"),
    ("perplexity_stderr", "json"),
    ("expected", "json"),
    ("model_sha256", "json"),
    ("blocks_sha256", "json"),
    ("onnxruntime", "json"),
    ("onnxruntime_distribution", "json"),
    ("driver", "json"),
    ("provider_options", "json"),
    ("reason", "json"),
)


def _ddl(columns) -> str:
    return ",\n            ".join(f"{name} {'text' if kind == 'json' else kind}" for name, kind in columns)


# Each step takes the schema from the version before it to its own; applied in order, in one transaction.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        f"""
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
            bench jsonb NOT NULL,
            {_ddl(BENCH_COLUMNS)},
            PRIMARY KEY (run_seq, position)
        );
        CREATE TABLE pplgate_accuracy (
            run_seq bigint NOT NULL REFERENCES pplgate_runs (seq) ON DELETE CASCADE,
            position integer NOT NULL,
            record jsonb NOT NULL,
            {_ddl(ACCURACY_COLUMNS)},
            PRIMARY KEY (run_seq, position)
        );
        """,
    ),
    (
        2,
        """
        CREATE INDEX pplgate_runs_node ON pplgate_runs (node, seq);
        CREATE INDEX pplgate_benchmarks_test ON pplgate_benchmarks (test, run_seq);
        CREATE INDEX pplgate_accuracy_test ON pplgate_accuracy (id, run_seq);
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
INSTALL = (
    "install the PostgreSQL client, psycopg 3: 'python -m pip install -r requirements-postgres.txt' in pplgate's "
    'checkout (or "pplgate[postgres]" from its wheels)'
)


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
        from pplgate.timings import UnreadableRun

        try:
            benches = [(i, Jsonb(b), *_bench_values(b)) for i, b in enumerate(data.get("benchmarks") or [])]
        except UnreadableRun as err:
            raise PplgateError(
                f"run {run_id} cannot be kept in {self.label}: {err}; nothing of it was written."
            ) from None
        with self._guard("writing a run to"), conn.transaction():
            row = conn.execute(
                "INSERT INTO pplgate_runs (run_id, node, datetime, commit_id, head) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (run_id) DO NOTHING RETURNING seq",
                (run_id, node, str(data.get("datetime") or ""), commit, Jsonb(head)),
            ).fetchone()
            if row is None:
                return f"{self.label}, run {run_id} (there already)"
            seq = row[0]
            bench_sql = ", ".join(name for name, _ in BENCH_COLUMNS)
            accuracy_sql = ", ".join(name for name, _ in ACCURACY_COLUMNS)
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO pplgate_benchmarks (run_seq, position, bench, {bench_sql}) "
                    f"VALUES (%s, %s, %s, {', '.join(['%s'] * len(BENCH_COLUMNS))})",
                    [(seq, *values) for values in benches],
                )
                cur.executemany(
                    f"INSERT INTO pplgate_accuracy (run_seq, position, record, {accuracy_sql}) "
                    f"VALUES (%s, %s, %s, {', '.join(['%s'] * len(ACCURACY_COLUMNS))})",
                    [
                        (seq, i, Jsonb(r), *_columns(ACCURACY_COLUMNS, r))
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

    def timing_rows(self, test: str | None = None, node: str | None = None, seqs: list[int] | None = None):
        """Every benchmark that is pplgate's (of the runs ``seqs`` only, where given), oldest first, as (seq,
        position, datetime, commit id, dirty, node, median, stddev, rounds, extra_info): only what judging reads, from
        columns of their own."""
        names = [name for name, _ in BENCH_COLUMNS if name not in ("median", "stddev", "rounds")]
        where, params = _filters(("b.test", test), ("r.node", node), seqs=seqs)
        rows = self._select(
            "SELECT r.seq, b.position, r.datetime, r.commit_id, r.head -> 'commit_info' ->> 'dirty', r.node, "
            f"b.median, b.stddev, b.rounds, {', '.join('b.' + n for n in names)} "
            "FROM pplgate_benchmarks b JOIN pplgate_runs r ON r.seq = b.run_seq "
            f"WHERE b.test IS NOT NULL{where} ORDER BY r.seq, b.position",
            params,
        )
        read = _Reader(BENCH_COLUMNS)
        out = []
        for row in rows:
            extra = read.values(names, row[9:])
            extra["conditions"] = {
                "under_load": bool(extra.pop("under_load")),
                "others_cpu_share": extra.pop("others_cpu_share"),
            }
            out.append((*row[:9], extra))
        return out

    def timing_lights(self, test: str | None = None, node: str | None = None):
        """Every benchmark that is pplgate's, oldest first, as ``pplgate.window.Light``: the few numbers deciding its
        verdict needs, without its extra_info."""
        from pplgate.window import Light

        where, params = _filters(("b.test", test), ("r.node", node))
        rows = self._select(
            "SELECT b.run_seq, b.position, b.test, r.node, b.batch_size, b.intra_op_threads, b.provider_options, "
            "b.blocks, b.scoring, b.median, coalesce(b.stddev, 0) / b.median, coalesce(b.rounds, 1), b.under_load, "
            "b.perplexity IS NOT NULL, b.model_sha256, b.blocks_sha256, b.method "
            "FROM pplgate_benchmarks b JOIN pplgate_runs r ON r.seq = b.run_seq "
            f"WHERE b.test IS NOT NULL{where} ORDER BY b.run_seq, b.position",
            params,
        )
        return [
            Light((r[0], r[1]), r[0], r[2], r[3], r[4:9], r[9], r[10], r[11], bool(r[12]), r[14:17] if r[13] else None)
            for r in rows
        ]

    def accuracy_rows(self, test: str | None = None, node: str | None = None, seqs: list[int] | None = None):
        """(seq, position, datetime, commit id, dirty, node, result) of every accuracy result (of the runs ``seqs``
        only, where given), oldest first: the keys the history reads."""
        names = [name for name, _ in ACCURACY_COLUMNS]
        where, params = _filters(("a.id", test), ("r.node", node), seqs=seqs)
        rows = self._select(
            "SELECT r.seq, a.position, r.datetime, r.commit_id, r.head -> 'commit_info' ->> 'dirty', r.node, "
            f"{', '.join('a.' + n for n in names)} "
            "FROM pplgate_accuracy a JOIN pplgate_runs r ON r.seq = a.run_seq "
            f"WHERE a.id IS NOT NULL{where} ORDER BY r.seq, a.position",
            params,
        )
        read = _Reader(ACCURACY_COLUMNS)
        return [(*row[:6], read.values(names, row[6:])) for row in rows]

    def accuracy_lights(self, test: str | None = None, node: str | None = None):
        """Every accuracy result, oldest first, as ``pplgate.window.LightResult``: what following its level needs."""
        from pplgate.window import LightResult

        where, params = _filters(("a.id", test), ("r.node", node))
        rows = self._select(
            "SELECT a.run_seq, a.position, a.id, r.node, a.perplexity, a.model_sha256, a.blocks_sha256, a.expected "
            "FROM pplgate_accuracy a JOIN pplgate_runs r ON r.seq = a.run_seq "
            f"WHERE a.id IS NOT NULL{where} ORDER BY a.run_seq, a.position",
            params,
        )
        decoded: dict = {}
        out = []
        for seq, position, test_, machine, perplexity, model, blocks, expected in rows:
            if expected not in decoded:
                decoded[expected] = None if expected is None else json.loads(expected)
            out.append(
                LightResult(
                    (seq, position),
                    seq,
                    f"{test_} on {machine}" if machine else test_,
                    (test_, machine),
                    _number_text(perplexity),
                    (model, blocks),
                    decoded[expected],
                )
            )
        return out

    def _select(self, sql: str, params: list) -> list:
        conn = self.connect()
        with self._guard("reading"):
            return conn.execute(sql, params).fetchall()

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


def _filters(*equal: tuple[str, str | None], seqs: list[int] | None = None) -> tuple[str, list]:
    """`` AND column = %s`` for each value given, and the runs ``seqs`` where given: each value a parameter."""
    sql = "".join(f" AND {column} = %s" for column, value in equal if value is not None)
    params: list = [value for _, value in equal if value is not None]
    if seqs is not None:
        sql += " AND r.seq = ANY(%s)"
        params.append(list(seqs))
    return sql, params


def _number_text(text: str | None) -> float | None:
    """A JSON value's text as the number it holds; None for null, text, true or false (never a perplexity)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


class _Reader:
    """Column values back to what a run holds: JSON text decoded, each distinct text once (they repeat night after
    night)."""

    def __init__(self, columns):
        self.json = {name for name, kind in columns if kind == "json"}
        self.decoded: dict[str, object] = {}

    def values(self, names, row) -> dict:
        out = {}
        for name, value in zip(names, row):
            if name in self.json and value is not None:
                if value not in self.decoded:
                    self.decoded[value] = json.loads(value)
                value = self.decoded[value]
            out[name] = value
        return out


def _columns(columns, source: dict) -> list:
    return [json.dumps(source.get(n), sort_keys=True) if kind == "json" else source.get(n) for n, kind in columns]


def _bench_values(bench: dict) -> list:
    """A benchmark's columns: pplgate's (checked as judging reads them), or none of another plugin's."""
    from pplgate.timings import timing_of

    timing = timing_of(bench, "", "", "", "") if isinstance(bench, dict) else None
    if timing is None:
        return [None] * len(BENCH_COLUMNS)
    stats, extra = bench["stats"], timing.extra
    conditions = extra.get("conditions") or {}
    source = {
        **extra,
        "median": timing.median_seconds,
        "stddev": stats.get("stddev") or 0.0,
        "rounds": timing.rounds,
        "tokens": timing.tokens_per_round,
        "under_load": bool(conditions.get("under_load")),
        "others_cpu_share": conditions.get("others_cpu_share"),
    }
    return _columns(BENCH_COLUMNS, source)
