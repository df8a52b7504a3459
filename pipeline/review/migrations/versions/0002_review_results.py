"""Stored review results, so the review app's list and rule-precision pages stay fast as
verdicts grow: per-call reviewed score (`reviews`), per-call per-rule counts
(`rule_reviews`), the distinct evidence items of each rule result
(`rule_results.evidence_items`, backfilled from the stored calls) and the folder
each call was read from (`calls.input_dir`, the review app's default audio root;
backfilled where the recorded source path is absolute); indexes on
`calls.scored_at` and `reviews.updated_at` make `Store.generation()` a lookup.

Revision ID: 0002
Revises: 0001
"""

import json
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD / DROP COLUMN (SQLite >= 3.35 has both): a batch copy of `calls` would
    # fail on the other tables' foreign keys.
    op.add_column("calls", sa.Column("input_dir", sa.Text))
    op.add_column("rule_results", sa.Column("evidence_items", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "reviews",
        sa.Column("call_id", sa.String, sa.ForeignKey("calls.id"), primary_key=True),
        sa.Column("scorecard", sa.String, nullable=False),
        sa.Column("total", sa.Float),
        sa.Column("grade", sa.String),
        sa.Column("verdicts", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_reviews_updated_at", "reviews", ["updated_at"])
    op.create_index("ix_calls_scored_at", "calls", ["scored_at"])
    op.create_table(
        "rule_reviews",
        sa.Column("call_id", sa.String, sa.ForeignKey("calls.id"), primary_key=True),
        sa.Column("rule_id", sa.String, primary_key=True),
        sa.Column("reviewed", sa.Integer, nullable=False),
        sa.Column("upheld", sa.Integer, nullable=False),
        sa.Column("added", sa.Integer, nullable=False),
    )
    _backfill()


def _backfill() -> None:
    conn = op.get_bind()
    calls = sa.table("calls", sa.column("id"), sa.column("source"), sa.column("call_json"), sa.column("input_dir"))
    results = sa.table("rule_results", sa.column("call_id"), sa.column("rule_id"), sa.column("evidence_items"))
    for call_id, source, text in conn.execute(sa.select(calls.c.id, calls.c.source, calls.c.call_json)).all():
        if source and Path(source).is_absolute():
            conn.execute(calls.update().where(calls.c.id == call_id).values(input_dir=str(Path(source).parent)))
        scores = json.loads(text).get("scores") or {}
        for dimension in (scores.get("dimensions") or {}).values():
            for result in dimension.get("results", []):
                if result.get("status") in ("deduct", "bonus"):
                    items = {(tuple(e.get("turn_ids", [])), e.get("text")) for e in result.get("evidence", [])}
                    conn.execute(results.update().where(results.c.call_id == call_id,
                                                        results.c.rule_id == result["rule_id"])
                                 .values(evidence_items=len(items)))


def downgrade() -> None:
    op.drop_table("rule_reviews")
    op.drop_index("ix_calls_scored_at", "calls")
    op.drop_table("reviews")
    op.drop_column("rule_results", "evidence_items")
    op.drop_column("calls", "input_dir")
