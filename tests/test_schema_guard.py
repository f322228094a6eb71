"""The schema guard end to end on SQLite, PostgreSQL and MariaDB: constraints from alembic_example/constraints.toml
are checked, refused while rows violate them, enforced by the database once fixed, and applied by migrate-safe
inside its run; integrity finds orphans; protection refuses hand-typed destruction and lets reviewed runs through.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import execute, migrate_example, use_repository


def args(example: Path, url: str) -> tuple[str, ...]:
    return ("-c", str(example / "alembic.ini"), "--url", url)


def dialect(url: str) -> str:
    return sa.engine.make_url(url).get_backend_name()


def refused(url: str, statement: str) -> str:
    """Run ``statement``; it must fail. Returns the database's message."""
    with pytest.raises(sa.exc.DBAPIError) as info:
        execute(url, statement)
    return str(info.value.orig)


def revision_of(url: str) -> list[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.text("SELECT version_num FROM alembic_version"))]
    finally:
        engine.dispose()


BREAK_CODES = [
    "UPDATE customers SET customer_code = 'K-1' WHERE id = 1",
    "UPDATE customers SET customer_code = 'kun00002' WHERE id = 2",
    "UPDATE customers SET customer_code = 'KUN0003' WHERE id = 3",
]
FIX_CODES = [f"UPDATE customers SET customer_code = 'KUN0000{i}' WHERE id = {i}" for i in (1, 2, 3)]


# --- constraints check / apply ---------------------------------------------------------------------------


def test_violations_block_apply_then_the_database_enforces_the_constraints(run_cli, example, db_url):
    migrate_example(example, db_url, customers=20)
    execute(db_url, *BREAK_CODES, "UPDATE customer_services SET price = -1 WHERE id IN (1, 2)")

    checked = run_cli(*args(example, db_url), "constraints", "check", "--format", "json")
    assert checked.exit_code == 3, checked.output
    report = {c["name"]: c for c in json.loads(checked.stdout)["constraints"]}
    assert report["customers_code_format"]["violations"] == 3
    assert [r["customer_code"] for r in report["customers_code_format"]["sample"]] == ["K-1", "kun00002", "KUN0003"]
    assert [r["id"] for r in report["customers_code_format"]["sample"]] == [1, 2, 3]
    assert report["customer_services_price_non_negative"]["violations"] == 2
    assert {
        c["status"]
        for n, c in report.items()
        if n not in ("customers_code_format", "customer_services_price_non_negative")
    } == {"ok"}

    blocked = run_cli(*args(example, db_url), "constraints", "apply")
    assert blocked.exit_code == 3, blocked.output
    assert "customers_code_format: 3 rows of customers violate it" in blocked.stderr
    assert "customer_services_price_non_negative: 2 rows" in blocked.stderr and "nothing was changed" in blocked.stderr
    assert "id=1, customer_code='K-1'" in blocked.stdout
    execute(
        db_url,
        "INSERT INTO customers (customer_code, name) VALUES ('NOT-A-CODE', 'still allowed')",
        "DELETE FROM customers WHERE customer_code = 'NOT-A-CODE'",
    )  # nothing was enforced

    execute(db_url, *FIX_CODES, "UPDATE customer_services SET price = 0 WHERE id IN (1, 2)")
    applied = run_cli(*args(example, db_url), "constraints", "apply")
    assert applied.exit_code == 0, applied.output
    assert (
        "constraints: 4 added, 2 unchanged" in applied.stdout
    )  # the CHECKs migrations 0002/0003 made are adopted as they are
    again = run_cli(*args(example, db_url), "constraints", "apply", "--format", "json")
    assert again.exit_code == 0, again.output
    assert {a["action"] for a in json.loads(again.stdout)["actions"]} == {"unchanged"}

    assert "customers_code_format" in refused(
        db_url, "INSERT INTO customers (customer_code, name) VALUES ('NEW00001', 'Neu')"
    )
    assert "customers_email_format" in refused(db_url, "UPDATE customers SET email = 'not an address' WHERE id = 4")
    assert "ck_customer_services_status" in refused(
        db_url, "UPDATE customer_services SET status = 'paused' WHERE id = 3"
    )
    assert "customer_services_price_non_negative" in refused(
        db_url, "UPDATE customer_services SET price = -5 WHERE id = 3"
    )
    execute(
        db_url, "INSERT INTO customers (customer_code, name, email) VALUES ('KUN99999', 'Neu', NULL)"
    )  # valid rows pass

    # a changed definition replaces the one in the database
    toml = example / "constraints.toml"
    toml.write_text(toml.read_text().replace('expression = "price >= 0"', 'expression = "price >= 0 AND price < 1000"'))
    changed = run_cli(*args(example, db_url), "constraints", "apply")
    assert changed.exit_code == 0, changed.output
    assert "replaced       customer_services_price_non_negative" in changed.stdout
    assert "customer_services_price_non_negative" in refused(
        db_url, "UPDATE customer_services SET price = 5000 WHERE id = 3"
    )


def test_migrate_safe_applies_constraints_and_a_violation_takes_the_run_back(run_cli, example, db_url, monkeypatch):
    migrate_example(example, db_url, "0004", customers=10)
    use_repository(example, example / "repo", monkeypatch)
    execute(db_url, *BREAK_CODES[:2])

    failed = run_cli(*args(example, db_url), "migrate-safe")

    assert failed.exit_code == 1, failed.output
    assert "customers_code_format: 2 rows of customers violate it" in failed.stderr
    assert ("restored to 0004" if dialect(db_url) == "mysql" else "rolled back to 0004") in failed.stderr
    assert revision_of(db_url) == ["0004"]
    execute(
        db_url,
        "INSERT INTO customers (customer_code, name) VALUES ('X', 'no constraint yet')",
        "DELETE FROM customers WHERE customer_code = 'X'",
    )

    execute(db_url, *FIX_CODES[:2])
    result = run_cli(*args(example, db_url), "migrate-safe")
    assert result.exit_code == 0, result.output
    assert "constraints: 4 added, 2 unchanged" in result.stderr
    assert revision_of(db_url) == ["0006"]
    assert "customers_code_format" in refused(
        db_url, "INSERT INTO customers (customer_code, name) VALUES ('NEW00001', 'Neu')"
    )


def test_definitions_are_found_through_the_settings_and_bad_ones_are_one_line_errors(run_cli, example, sqlite_url):
    migrate_example(example, sqlite_url, customers=3)
    (example / "guard").mkdir()
    (example / "constraints.toml").rename(example / "guard" / "business.toml")
    settings = example / "migrate-guard.toml"
    settings.write_text(settings.read_text() + 'constraints = ["guard/business.toml"]\n')
    found = run_cli(*args(example, sqlite_url), "constraints", "check")
    assert found.exit_code == 0 and "checked 6 constraints (sqlite)" in found.stdout, found.output

    settings.write_text(settings.read_text().replace("guard/business.toml", "guard/missing.toml"))
    missing = run_cli(*args(example, sqlite_url), "integrity")
    assert missing.exit_code == 2 and "migrate-guard.toml: constraints: not a file" in missing.stderr, missing.output

    settings.write_text(settings.read_text().replace("guard/missing.toml", "constraints.toml"))
    (example / "constraints.toml").write_text('[[constraint]]\nname = "x"\ntable = "customers"\nexpresion = "id > 0"\n')
    result = run_cli(*args(example, sqlite_url), "constraints", "check")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "migrate-guard: error: constraints.toml: constraint[0].expresion: unknown key "
        "(known: description, dialects, expression, name, schema, severity, table)"
    )
    safe = run_cli(*args(example, sqlite_url), "migrate-safe")  # before anything is touched
    assert safe.exit_code == 2 and "constraint[0].expresion: unknown key" in safe.stderr, safe.output


# --- integrity ---------------------------------------------------------------------------------------------


ORPHAN = {  # how to write an orphan past each engine's foreign key enforcement
    "sqlite": [],  # PRAGMA foreign_keys is off unless a connection turns it on
    "postgresql": ["SET session_replication_role = replica"],
    "mysql": ["SET foreign_key_checks = 0"],
}


def test_integrity_finds_orphans_duplicates_and_failing_checks(run_cli, example, db_url):
    migrate_example(example, db_url, customers=20)
    execute(
        db_url,
        *ORPHAN[dialect(db_url)],
        "INSERT INTO customer_services (id, customer_id, package_id, status, price) "
        "VALUES (900, 4242, 1, 'pending', 1)",
        "INSERT INTO customer_services (id, customer_id, package_id, status, price) "
        "VALUES (901, 4343, 1, 'pending', 1)",
    )
    execute(
        db_url,
        "UPDATE customers SET email = 'shared@example.com' WHERE id IN (5, 6)",
        "UPDATE family_accounts SET current_members = current_members - 1 WHERE id = 1",
    )

    result = run_cli(*args(example, db_url), "integrity", "--format", "json")

    assert result.exit_code == 3, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    orphans = checks["fk_customer_services_customer_id_customers"]
    assert (orphans["status"], orphans["severity"], orphans["count"]) == ("failed", "error", 2)
    assert orphans["sample"] == [{"id": 900, "customer_id": 4242}, {"id": 901, "customer_id": 4343}]
    dup = checks["customers_email_unique"]
    assert (dup["status"], dup["severity"], dup["count"]) == ("failed", "warning", 1)
    assert dup["sample"] == [{"email": "shared@example.com", "n": 2}]
    assert (checks["family_member_count_matches"]["status"], checks["family_member_count_matches"]["count"]) == (
        "failed",
        1,
    )
    assert {c["status"] for n, c in checks.items() if c["kind"] == "foreign_key" and n != orphans["name"]} == {"ok"}

    text = run_cli(*args(example, db_url), "integrity")
    assert text.exit_code == 3
    assert "2 orphaned rows" in text.stdout and "1 errors, 2 warnings" in text.stdout

    execute(db_url, "DELETE FROM customer_services WHERE id IN (900, 901)")
    assert run_cli(*args(example, db_url), "integrity").exit_code == 0  # warnings alone pass


# --- protection ---------------------------------------------------------------------------------------------


def test_postgresql_protection_refuses_hand_typed_ddl_and_lets_reviewed_migrate_safe_through(
    run_cli, example, postgresql_url, monkeypatch
):
    url = postgresql_url
    migrate_example(example, url, "0004", customers=10)
    use_repository(example, example / "repo", monkeypatch)
    installed = run_cli(*args(example, url), "protect", "install")
    assert installed.exit_code == 0, installed.output
    assert run_cli(*args(example, url), "protect", "install").exit_code == 0  # idempotent

    refused(url, "DROP TABLE customers")  # PostgreSQL itself already refuses this one: tables reference it
    assert "DROP TABLE refused: table public.customers is protected" in refused(url, "DROP TABLE customers CASCADE")
    assert "table public.family_members is protected" in refused(url, "DROP TABLE family_members")
    assert "drops column legacy_code of protected table public.customers" in refused(
        url, "ALTER TABLE customers DROP COLUMN legacy_code"
    )
    assert "public.customers.email" in refused(url, "ALTER TABLE customers ALTER COLUMN email TYPE varchar(300)")
    assert "public.customers.name" in refused(url, "ALTER TABLE customers RENAME COLUMN name TO full_name")
    assert "TRUNCATE refused" in refused(url, "TRUNCATE family_members")
    execute(
        url,
        "ALTER TABLE customers ADD COLUMN nickname varchar(20)",
        "CREATE TABLE scratch (id int)",
        "DROP TABLE scratch",
    )  # adding columns and unprotected tables stay free
    status = run_cli(*args(example, url), "protect", "status", "--format", "json")
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["covered"] == [
        "customer_services",
        "customers",
        "family_accounts",
        "family_members",
        "service_categories",
        "service_packages",
    ]

    # 0005 drops customers.legacy_code with a reviewed acknowledgement: migrate-safe goes through
    result = run_cli(*args(example, url), "migrate-safe")
    assert result.exit_code == 0, result.output
    assert revision_of(url) == ["0006"]
    assert "legacy_code" not in [
        c["name"] for c in sa.inspect(sa.create_engine(url, poolclass=sa.pool.NullPool)).get_columns("customers")
    ]
    assert "table public.customers is protected" in refused(
        url, "DROP TABLE customers CASCADE"
    )  # still protected afterwards

    assert run_cli(*args(example, url), "protect", "uninstall").exit_code == 0
    execute(url, "TRUNCATE family_members")


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_protection_refuses_emptying_a_protected_table_but_not_a_reviewed_run(
    run_cli, example, request, monkeypatch, backend
):
    url = request.getfixturevalue(f"{backend}_url")
    migrate_example(example, url, "0004", customers=10)
    use_repository(example, example / "repo", monkeypatch)
    assert run_cli(*args(example, url), "protect", "install").exit_code == 0

    assert "would remove every row of protected table family_members" in refused(url, "DELETE FROM family_members")
    execute(url, "DELETE FROM family_members WHERE id = 1", "DELETE FROM customer_services WHERE id > 2")
    assert "protected table customer_services" in refused(url, "DELETE FROM customer_services WHERE id <= 2")

    (example / "migrations" / "versions" / "0007_reset_families.py").write_text(
        textwrap.dedent('''
        """reset family memberships"""
        from alembic import op

        revision = "0007"
        down_revision = "0006"
        branch_labels = None
        depends_on = None


        def upgrade():
            # migrate-guard: allow delete-without-where family_members -- families are rebuilt by the import; reviewed
            op.execute("DELETE FROM family_members")
            op.execute("UPDATE family_accounts SET current_members = 0 WHERE id > 0")


        def downgrade():
            pass
    ''')
    )
    result = run_cli(*args(example, url), "migrate-safe")
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM family_members")).scalar() == 0
    engine.dispose()
    assert "would remove every row of protected table customer_services" in refused(
        url, "DELETE FROM customer_services"
    )
    # 0005 rebuilt customers on SQLite (batch mode), which drops its triggers: migrate-safe put the guard back
    if backend == "sqlite":  # (on MariaDB the foreign keys from customer_services refuse it first)
        assert "protected table customers" in refused(url, "DELETE FROM customers")
    assert run_cli(*args(example, url), "protect", "status").exit_code == 0

    assert run_cli(*args(example, url), "protect", "uninstall").exit_code == 0
    execute(url, "DELETE FROM customer_services")


def test_myisam_keeps_no_foreign_keys_so_declared_ones_are_checked(run_cli, example, mariadb_url):
    url = mariadb_url
    migrate_example(example, url, customers=5)
    execute(
        url,
        "CREATE TABLE legacy_notes (id INT PRIMARY KEY, customer_id INT, "
        "FOREIGN KEY (customer_id) REFERENCES customers (id)) ENGINE=MyISAM",  # MyISAM drops the FOREIGN KEY
        "INSERT INTO legacy_notes VALUES (1, 1), (2, 777)",
    )
    toml = example / "constraints.toml"
    toml.write_text(
        toml.read_text()
        + textwrap.dedent("""
        [[foreign_key]]
        name = "legacy_notes_customer"
        table = "legacy_notes"
        columns = ["customer_id"]
        references = "customers"
        referenced_columns = ["id"]
    """)
    )

    result = run_cli(*args(example, url), "integrity", "--format", "json")

    assert result.exit_code == 3, result.output
    declared = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "legacy_notes_customer")
    assert (declared["status"], declared["count"], declared["sample"]) == ("failed", 1, [{"id": 2, "customer_id": 777}])
    assert declared["note"] == "declared in the definitions; not enforced: MyISAM table"


def test_postgresql_protection_needs_a_superuser_and_says_so_in_one_line(run_cli, example, postgresql_url):
    import uuid

    role = f"mg_app_{uuid.uuid4().hex[:8]}"
    migrate_example(example, postgresql_url, customers=None)
    execute(
        postgresql_url,
        f"CREATE ROLE {role} LOGIN",
        f"GRANT CREATE ON DATABASE {sa.engine.make_url(postgresql_url).database} TO {role}",
    )
    try:
        as_app = sa.engine.make_url(postgresql_url).set(username=role).render_as_string(hide_password=False)
        result = run_cli(*args(example, as_app), "protect", "install")
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1
        assert "needs a PostgreSQL superuser" in result.stderr and "event trigger" in result.stderr
    finally:
        execute(
            postgresql_url,
            f"REVOKE CREATE ON DATABASE {sa.engine.make_url(postgresql_url).database} FROM {role}",
            f"DROP ROLE {role}",
        )


def test_apply_gives_up_on_a_busy_postgresql_table_instead_of_queueing_behind_it(run_cli, example, postgresql_url):
    url = postgresql_url
    migrate_example(example, url, customers=5)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as reader:  # a long report holds its ACCESS SHARE lock on customers
        reader.execute(sa.text("SELECT COUNT(*) FROM customers")).scalar()

        result = run_cli(*args(example, url), "constraints", "apply", "--lock-timeout", "0.5")

        assert result.exit_code == 3, result.output
        assert "customers_code_format on customers was not applied" in result.stderr and "lock timeout" in result.stderr
        reader.rollback()
    engine.dispose()
    done = run_cli(*args(example, url), "constraints", "apply")
    assert done.exit_code == 0 and "constraints: 4 added, 2 unchanged" in done.stdout, done.output


def test_a_confirmed_restore_passes_the_protection_and_keeps_it(run_cli, example, db_url, monkeypatch):
    """`restore --yes` is a reviewed operation (confirmed, with a pre-snapshot): protection does not
    stand in its way, and is in place again afterwards."""
    from conftest import everything

    migrate_example(example, db_url, "heads", customers=10)
    use_repository(example, example / "repo", monkeypatch)
    assert run_cli(*args(example, db_url), "protect", "install").exit_code == 0
    taken = run_cli(*args(example, db_url), "backup", "--format", "json")
    assert taken.exit_code == 0, taken.output
    snapshot = json.loads(taken.stdout)["id"]
    before = everything(db_url)
    execute(db_url, "UPDATE customers SET notes = 'changed'", "DELETE FROM family_members WHERE id > 1")

    partial = run_cli(*args(example, db_url), "restore", snapshot, "--tables", "customers,family_members", "--yes")
    assert partial.exit_code == 0, partial.output
    execute(db_url, "UPDATE customers SET notes = 'changed again'")
    full = run_cli(*args(example, db_url), "restore", snapshot, "--yes")
    assert full.exit_code == 0, full.output
    assert everything(db_url) == before
    status = run_cli(*args(example, db_url), "protect", "status")
    assert status.exit_code == 0, status.output
    verified = run_cli(*args(example, db_url), "verify", snapshot, "--read-data")  # a scratch database
    assert verified.exit_code == 0, verified.output
    if dialect(db_url) == "postgresql":
        assert "TRUNCATE refused" in refused(db_url, "TRUNCATE family_members")
        assert "is protected" in refused(db_url, "DROP TABLE family_members")
    else:
        assert "protected table family_members" in refused(db_url, "DELETE FROM family_members")


@pytest.mark.parametrize(
    "command",
    [
        ("constraints", "check"),
        ("constraints", "apply"),
        ("integrity",),
        ("protect", "install"),
        ("protect", "status"),
        ("migrate-safe", "--dry-run"),
    ],
)
def test_a_database_that_cannot_be_opened_is_one_line(run_cli, example, tmp_path, command):
    result = run_cli(*args(example, f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"), *command)
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("migrate-guard: error: ") and "unable to open database file" in line, line
