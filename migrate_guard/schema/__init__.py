"""The schema guard: CHECK constraints from definitions, protection inside the database, integrity checks."""
