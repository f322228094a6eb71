"""mariadb-dump's extended INSERTs re-cut by content (``rebreak_inserts``), without a server: both layouts
mariadb-dump writes (a statement per line, as MySQL's mysqldump does; a row per line, as MariaDB 10.11
does), values that look like row boundaries, and the point of it: rows inserted in the middle of a table
change the statements around them, not every statement after them. The restore of re-cut statements
on a real server is tested with the engine (tests/test_engines_mysql.py's awkward values)."""

from __future__ import annotations

import random

import pytest

from migrate_guard.backup.engines.mysql import STATEMENT_CDC, rebreak_inserts

HEAD = b"--\n-- Dumping data for table `t`\n--\n\nLOCK TABLES `t` WRITE;\n/*!40000 ALTER TABLE `t` DISABLE KEYS */;\n"
TAIL = b"/*!40000 ALTER TABLE `t` ENABLE KEYS */;\nUNLOCK TABLES;\ncommit;\n"
AWKWARD = ["'", "\\", "),(", "),\\n(", "(", ")", ",", ";", "é", "x" * 7]


def values(rnd: random.Random, n: int) -> list[bytes]:
    """Rows as mariadb-dump writes them: numbers, NULL and strings with backslash escapes, many of them
    holding what a row boundary looks like."""

    def value() -> str:
        pick = rnd.random()
        if pick < 0.3:
            return str(rnd.randint(-(10**9), 10**9))
        if pick < 0.4:
            return "NULL"
        text = "".join(rnd.choice(AWKWARD) for _ in range(rnd.randint(0, 30)))
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return [("(" + ",".join(value() for _ in range(4)) + ")").encode() for _ in range(n)]


def dump(rows: list[bytes], layout: str, per: int = 700) -> bytes:
    """A table's data section with mariadb-dump's byte-count breaks (every ``per`` rows here)."""
    out = [HEAD]
    for i in range(0, len(rows), per):
        if layout == "line":
            out.append(b"INSERT INTO `t` VALUES " + b",".join(rows[i : i + per]) + b";\n")
        else:
            out.append(b"INSERT INTO `t` VALUES\n" + b",\n".join(rows[i : i + per]) + b";\n")
    return b"".join(out) + TAIL


def statements(section: bytes, layout: str) -> list[bytes]:
    start = b"INSERT INTO `t` VALUES " if layout == "line" else b"INSERT INTO `t` VALUES\n"
    assert section.startswith(HEAD) and section.endswith(TAIL)
    body = section[len(HEAD) : -len(TAIL)]
    parts = body.split(b";\n")
    assert parts[-1] == b"" and all(p.startswith(start) for p in parts[:-1])
    return [p[len(start) :] for p in parts[:-1]]


def rows_of(found: list[bytes], layout: str) -> list[bytes]:
    """The rows back out of statements, split the slow, sure way: a quote-aware scan."""
    rows = []
    for body in found:
        depth, quoted, escaped, begin = 0, False, False, 0
        for i, ch in enumerate(body):
            if quoted:
                if escaped:
                    escaped = False
                elif ch == 0x5C:
                    escaped = True
                elif ch == 0x27:
                    quoted = False
            elif ch == 0x27:
                quoted = True
            elif ch == 0x28 and depth == 0:
                depth, begin = 1, i
            elif ch == 0x29 and depth == 1:
                depth = 0
                rows.append(body[begin : i + 1])
        assert not quoted and depth == 0, "a statement cut inside a value"
    return rows


@pytest.mark.parametrize("layout", ["line", "rows"])
def test_every_row_survives_the_recut_whatever_the_pieces(layout):
    rows = values(random.Random(3), 30_000)  # ~2.7 MB: more than a buffer (2 maximal statements)
    section = dump(rows, layout)
    recut = b"".join(rebreak_inserts([section[i : i + 65536] for i in range(0, len(section), 65536)], "t"))
    found = statements(recut, layout)
    assert rows_of(found, layout) == rows
    assert len(found) > 1 and max(map(len, found)) <= STATEMENT_CDC[2] + max(map(len, rows))
    for size in (61, 777, 10**8):  # where the dump's output happens to be cut changes nothing
        pieces = [section[i : i + size] for i in range(0, len(section), size)]
        assert b"".join(rebreak_inserts(pieces, "t")) == recut


@pytest.mark.parametrize("layout", ["line", "rows"])
def test_rows_inserted_in_the_middle_change_the_statements_around_them_only(layout):
    rnd = random.Random(5)
    rows = values(rnd, 60_000)
    before = set(statements(b"".join(rebreak_inserts([dump(rows, layout)], "t")), layout))
    grown = rows[:30_000] + values(rnd, 600) + rows[30_000:]  # 1% new rows
    after = statements(b"".join(rebreak_inserts([dump(grown, layout)], "t")), layout)
    new = sum(len(s) for s in after if s not in before)
    total = sum(map(len, after))
    assert new < 0.25 * total, (new, total)  # mariadb-dump's own breaks: every statement after them changed
    as_dumped_before = set(statements(dump(rows, layout), layout))
    as_dumped_after = statements(dump(grown, layout), layout)
    assert sum(len(s) for s in as_dumped_after if s not in as_dumped_before) > 0.45 * total


def test_other_lines_pass_unchanged():
    section = HEAD + TAIL + b"DELIMITER ;;\n/*!50003 CREATE*/ /*!50003 TRIGGER x BEFORE INSERT ON `t` */;;\n"
    assert b"".join(rebreak_inserts([section], "t")) == section
    other = dump(values(random.Random(1), 50), "rows").replace(b"`t`", b"`other`")
    assert b"".join(rebreak_inserts([other], "t")) == other  # another table's INSERTs are not this one's
