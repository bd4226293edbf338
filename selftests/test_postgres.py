"""The fleet's store in PostgreSQL, against a real server: the same runs and verdicts as a folder, once each, whole."""

from __future__ import annotations

import threading

import pytest

from pplgate.errors import PplgateError
from pplgate.history import accuracy_history, judged, render_accuracy, render_table, saved_history, timings_of_run
from pplgate.verdicts import drift, throughput_verdict
from pplgate.postgres import MIGRATIONS, SCHEMA_VERSION, PostgresStore, StoreUnreachable
from pplgate.store import Acceptance, FolderStore
from pplgate.transfer import export_store, import_folder
from saved import NODES, STEADY, TESTS, accuracy, eventful, retest, saved_run, with_accuracy, write_storage


def nights(n_slow: int = 0) -> list[dict]:
    """Five steady nights, then ``n_slow`` 25% slower ones, each with its accuracy result."""
    runs = [saved_run(s) for s in STEADY] + [saved_run(0.625) for _ in range(n_slow)]
    return [with_accuracy(r, accuracy(1234.5)) for r in runs]


def tables(store) -> str:
    return render_table(judged(store).rows) + render_accuracy(accuracy_history(store))


def test_a_folder_and_the_database_give_the_same_tables(postgres_url, tmp_path):
    """One set of runs in both stores: the same verdicts, by the same code."""
    runs = nights(3)
    runs[6]["pplgate"]["accuracy"][0]["perplexity"] = 1234.6  # a move on the same model and blocks
    folder = write_storage(tmp_path / "bench", runs)
    with PostgresStore(postgres_url) as store:
        moved = import_folder(folder, store)
        assert len(moved.added) == 8 and moved.already == 0
        assert tables(store) == tables(FolderStore(folder))
        assert "slower (-20% ± 1%) since run 0006" in tables(store) and "from 1234.5 (run 0001) since run 0007" in tables(store)


def test_the_last_nights_from_the_database_are_what_judging_every_night_in_a_folder_gives(postgres_url, tmp_path):
    """The database reads a few numbers of every run, and only the runs the verdicts look back at whole."""
    folder = FolderStore(write_storage(tmp_path / "bench", eventful(0)))
    with PostgresStore(postgres_url) as store:
        import_folder(folder.folder, store)
        for target in (folder, store):
            target.accept(Acceptance("throughput", "tiny-cpu-fp32", "node-a", "0150", "qa", "2026-12-01", "new driver"))
        every = judged(folder).rows
        assert render_table(judged(store, shown=6).rows) == render_table({t: r[-6:] for t, r in every.items()})
        accepted = {"throughput": {("tiny-cpu-fp32", "node-a"): 150}}
        full = accuracy_history(folder, accepted)
        assert render_accuracy(accuracy_history(store, accepted, shown=6)) == render_accuracy(
            {key: rows[-6:] for key, rows in full.items()}
        )
        # The gate's next run, judged against what it reads of each store.
        tonight = [
            t
            for test in TESTS
            for node in NODES
            for seconds in (0.5, 0.7)
            for t in timings_of_run("this run", retest(saved_run(seconds, perplexity=1234.9, node=node), test))
        ]
        (from_database, _), (from_folder, _) = saved_history(store), saved_history(folder)
        for t in tonight:
            assert throughput_verdict(t, from_database).sentence == throughput_verdict(t, from_folder).sentence
            assert drift(t, from_database).sentence == drift(t, from_folder).sentence


def test_importing_twice_adds_nothing_twice_and_export_gives_the_runs_back(postgres_url, tmp_path):
    folder = write_storage(tmp_path / "bench", nights(1))
    with PostgresStore(postgres_url) as store:
        assert len(import_folder(folder, store).added) == 6
        again = import_folder(folder, store)
        assert (again.added, again.already) == ([], 6)
        out = tmp_path / "exported"
        assert len(export_store(store, out).added) == 6
        assert export_store(store, out).already == 6
        assert tables(FolderStore(out)) == tables(store)


def test_an_older_schema_is_upgraded_and_a_newer_one_refused(postgres_url):
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(MIGRATIONS[0][1])
        conn.execute("UPDATE pplgate_schema SET version = 1")
    with PostgresStore(postgres_url) as store:
        assert store.version() == SCHEMA_VERSION
        store.save(nights()[0])
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE pplgate_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(PplgateError, match=rf"holds pplgate's schema version {SCHEMA_VERSION + 1}, newer than this "
                                           rf"pplgate's {SCHEMA_VERSION}: upgrade pplgate on this node"):
        PostgresStore(postgres_url).connect()


def test_nodes_recording_at_once_never_lose_mix_or_duplicate_a_run(postgres_url):
    runs = [with_accuracy(saved_run(0.5, node=f"node-{i % 8}"), accuracy(1234.5)) for i in range(64)]

    def record(part):
        with PostgresStore(postgres_url) as store:
            for run in part:
                store.save(run)

    threads = [threading.Thread(target=record, args=(runs[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with PostgresStore(postgres_url) as store:
        store.save(runs[0])  # the same run again: kept once
        kept, _ = store.runs()
        assert sorted(r.run_id for r in kept) == sorted(r["pplgate"]["run_id"] for r in runs)
        assert all(len(r.data["benchmarks"]) == 1 for r in kept)
        assert len(store.accuracy_rows()) == 64


@pytest.mark.parametrize("fault", ["the server goes away", "no room left"])
def test_a_run_that_fails_mid_write_leaves_nothing_of_itself(postgres_url, fault):
    """A trigger makes the server fail the way it would, mid-transaction: the run is all there or not at all."""
    import psycopg

    with PostgresStore(postgres_url) as store:
        store.save(nights()[0])
    body = ("PERFORM pg_terminate_backend(pg_backend_pid());" if fault == "the server goes away"
            else "RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full';")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER fail BEFORE INSERT ON pplgate_accuracy FOR EACH ROW EXECUTE FUNCTION fail()")
    with pytest.raises(StoreUnreachable, match=r"^writing a run to postgresql://\*\*\*@/pplgate_\w+\?host=/\S+ failed \(.+\)$"):
        with PostgresStore(postgres_url) as store:
            store.save(nights()[1])
    with PostgresStore(postgres_url) as store:
        assert len(store.runs()[0]) == 1 and len(store.accuracy_rows()) == 1


def test_a_refused_login_never_shows_the_password(postgres_server):
    base, _, query = postgres_server.partition("?")
    url = base.replace("postgresql://postgres@", "postgresql://nobody:s3cret-pw@") + "?" + query
    with pytest.raises(StoreUnreachable) as info:
        PostgresStore(url).connect()
    assert "s3cret-pw" not in str(info.value) and str(info.value).startswith("cannot connect to postgresql://***@/postgres?host=/")
    assert 'role "nobody" does not exist' in str(info.value)


def test_values_reach_sql_as_parameters(postgres_url):
    hostile = "x'); DROP TABLE pplgate_runs; --"
    run = with_accuracy(saved_run(0.5, node=hostile), accuracy(1234.5, test=hostile))
    with PostgresStore(postgres_url) as store:
        store.save(run)
        assert [(node, r["id"]) for *_, node, r in store.accuracy_rows()] == [(hostile, hostile)]
        assert store.runs()[0][0].data["machine_info"]["node"] == hostile
