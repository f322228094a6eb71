"""The migrate-safe journal as `history` shows it."""

from __future__ import annotations

import json


def test_history_records_each_run_and_its_outcome(run_cli, example):
    args = ("-c", str(example / "alembic.ini"))
    assert run_cli(*args, "migrate-safe", "0004").exit_code == 0
    (example / "migrations/versions/0007_broken.py").write_text(
        'from alembic import op\nimport sqlalchemy as sa\nrevision = "0007"\ndown_revision = "0006"\n'
        "def upgrade():\n    op.add_column('customers', sa.Column('tier', sa.String(10)))\n"
        "    op.execute('SELECT * FROM no_such_table')\n\ndef downgrade():\n    pass\n"
    )
    result = run_cli(*args, "migrate-safe")
    assert result.exit_code == 1, result.output
    runs = json.loads(run_cli(*args, "history", "--format", "json").stdout)
    assert [(r["from"], r["to"], r["state"]) for r in runs] == [
        ([], ["0004"], "succeeded"),
        (["0004"], "heads", "rolled-back"),
    ]
    assert runs[1]["snapshot"] and "no_such_table" in runs[1]["error"] and runs[1]["user"] and runs[1]["host"]
    text = run_cli(*args, "history").stdout
    assert "rolled-back" in text and "0004 -> heads" in text
