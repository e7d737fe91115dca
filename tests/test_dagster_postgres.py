"""The institutional tier's Dagster instance (EMP_TIER=institutional): run, event-log and schedule storage in
PostgreSQL through dagster-postgres, in the database ``<EMP_PG_URL's name>_dagster``, against the loopback server."""

import logging

import dagster as dg
import pytest
import yaml

from emp_core.config import REPO_ROOT
from tests.support import free_port

PROFILE = REPO_ROOT / "dagster.institutional.yaml"


@dg.asset
def tiny():
    return dg.MaterializeResult(metadata={"rows": 3})


def test_a_materialisation_is_stored_in_postgres_and_read_back(institutional, pg_url, emp_home, monkeypatch, caplog):
    import psycopg
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    from emp_dagster.commands import prepare_instance

    monkeypatch.setenv("EMP_TIER", "embedded")
    prepare_instance()  # the same DAGSTER_HOME used by the embedded tier first: switching is no user edit
    monkeypatch.setenv("EMP_TIER", "institutional")
    with caplog.at_level(logging.WARNING, logger="emp.dagster"):
        home = prepare_instance()
    assert home == emp_home / "dagster"
    assert (home / "dagster.yaml").read_bytes() == PROFILE.read_bytes()
    assert not (home / "dagster.yaml.previous").exists() and "previous" not in caplog.text

    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        result = dg.materialize([tiny], instance=instance)
    assert result.success
    run_id = result.run_id

    with psycopg.connect(institutional) as con:  # straight from PostgreSQL, not through Dagster
        assert con.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,)).fetchall() == [("SUCCESS",)]
        rows = con.execute("SELECT asset_key FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
                           (run_id, "ASSET_MATERIALIZATION")).fetchall()
        assert rows == [('["tiny"]',)]
        tables = {r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall()}
        assert {"runs", "event_logs", "jobs", "instigators", "job_ticks"} <= tables  # schedule storage too
    with psycopg.connect(pg_url) as con:  # the platform's database holds none of Dagster's tables
        assert con.execute("SELECT count(*) FROM information_schema.tables "
                           "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')").fetchone() == (0,)

    with dg.DagsterInstance.get() as fresh:
        run = fresh.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert fresh.get_latest_materialization_event(dg.AssetKey("tiny")).run_id == run_id

    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.suffix in (".db", ".sqlite")) == []
    assert not (home / "history").exists() and not (home / "schedules").exists()


def test_an_unreachable_server_is_one_clear_error_naming_it_without_its_password(emp_home, monkeypatch, capsys):
    from emp_core.cli import main
    from emp_core.errors import EmpError
    from emp_dagster.commands import prepare_instance

    port = free_port()  # closed once free_port returns: nothing listens there
    monkeypatch.setenv("EMP_TIER", "institutional")
    monkeypatch.setenv("EMP_PG_URL", f"postgresql://root:s3cret@127.0.0.1:{port}/emp_nowhere")
    monkeypatch.delenv("EMP_DAGSTER_PG_URL", raising=False)
    with pytest.raises(EmpError) as err:
        prepare_instance()
    message = str(err.value)
    assert "Dagster's instance storage" in message and f"port={port}" in message and "127.0.0.1" in message
    assert "s3cret" not in message and "***" in message
    assert not (emp_home / "dagster" / "dagster.yaml").exists()

    assert main(["ui"]) == 2
    err_text = capsys.readouterr().err
    assert err_text.startswith("emp ui: error: Dagster's instance storage") and err_text.count("\n") == 1
    assert "Traceback" not in err_text and "s3cret" not in err_text


def test_the_institutional_profile_is_dagster_yaml_with_postgres_storage_from_the_environment():
    embedded = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    institutional = yaml.safe_load(PROFILE.read_text())
    storage = institutional.pop("storage")
    assert institutional == embedded  # run queue, telemetry, nux, code servers: the same in both tiers
    assert storage == {"postgres": {"postgres_url": {"env": "EMP_DAGSTER_PG_URL"}}}
