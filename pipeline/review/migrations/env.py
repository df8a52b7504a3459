"""Alembic environment for the results store.

`Store.migrate()` passes an open connection (inside its transaction) in
`config.attributes["connection"]`; migrations run on it, so a failed upgrade
rolls back with everything else.

To change the schema: change the tables in pipeline/review/store.py, then add a file
to versions/ whose `down_revision` is the newest one, with `upgrade()` doing
the same change through `op` (use `op.batch_alter_table` so SQLite can alter
columns). Every store is upgraded the next time it is opened.
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
