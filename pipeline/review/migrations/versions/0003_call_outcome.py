"""The customer outcome of each call on its row (`calls.resolution`,
`calls.sentiment_change`), so the review app's list shows and filters it without
reading every call's JSON; backfilled from the stored calls.

Revision ID: 0003
Revises: 0002
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("resolution", sa.String))
    op.add_column("calls", sa.Column("sentiment_change", sa.String))
    conn = op.get_bind()
    calls = sa.table("calls", sa.column("id"), sa.column("call_json"), sa.column("resolution"),
                     sa.column("sentiment_change"))
    for call_id, text in conn.execute(sa.select(calls.c.id, calls.c.call_json)).all():
        outcome = json.loads(text).get("outcome") or {}
        conn.execute(calls.update().where(calls.c.id == call_id)
                     .values(resolution=outcome.get("resolution"), sentiment_change=outcome.get("sentiment_change")))


def downgrade() -> None:
    op.drop_column("calls", "sentiment_change")
    op.drop_column("calls", "resolution")
