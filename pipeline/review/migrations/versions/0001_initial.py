"""Initial schema: calls and their turns, tags, events, scores, evidence; verdicts; human scores.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _call_id(primary_key: bool = False, index: bool = False) -> sa.Column:
    return sa.Column("call_id", sa.String, sa.ForeignKey("calls.id"), primary_key=primary_key,
                     nullable=False, index=index)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("agent_id", sa.String, index=True),
        sa.Column("team", sa.String),
        sa.Column("date", sa.String),
        sa.Column("week", sa.String, index=True),
        sa.Column("industry", sa.String),
        sa.Column("audio_path", sa.Text),
        sa.Column("input_sha256", sa.String(64), nullable=False),
        sa.Column("config_version", sa.String, nullable=False),
        sa.Column("model_versions", sa.JSON, nullable=False),
        sa.Column("scorecard", sa.String),
        sa.Column("total", sa.Float),
        sa.Column("grade", sa.String, index=True),
        sa.Column("critical_failed", sa.Boolean, nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("call_json", sa.Text, nullable=False),
    )
    op.create_table(
        "dimension_scores",
        _call_id(primary_key=True),
        sa.Column("dimension", sa.String, primary_key=True),
        sa.Column("label", sa.String),
        sa.Column("score", sa.Float),
        sa.Column("applicable", sa.Boolean, nullable=False),
    )
    op.create_table(
        "turns",
        _call_id(primary_key=True),
        sa.Column("turn_id", sa.Integer, primary_key=True),
        sa.Column("role", sa.String, nullable=False),
        sa.Column("speaker", sa.String),
        sa.Column("start_s", sa.Float),
        sa.Column("end_s", sa.Float),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("sentiment", sa.String),
        sa.Column("asr_confidence", sa.Float),
        sa.Column("low_confidence", sa.Boolean, nullable=False),
    )
    op.create_table(
        "tags",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _call_id(index=True),
        sa.Column("turn_id", sa.Integer, nullable=False),
        sa.Column("label", sa.String, nullable=False, index=True),
        sa.Column("char_start", sa.Integer, nullable=False),
        sa.Column("char_end", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("confidence", sa.Float),
        sa.Column("source", sa.String),
        sa.Column("rule", sa.String),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _call_id(index=True),
        sa.Column("kind", sa.String, nullable=False, index=True),
        sa.Column("role", sa.String),
        sa.Column("start_s", sa.Float),
        sa.Column("end_s", sa.Float),
        sa.Column("turn_ids", sa.JSON, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("detail", sa.Text),
    )
    op.create_table(
        "rule_results",
        _call_id(primary_key=True),
        sa.Column("rule_id", sa.String, primary_key=True),
        sa.Column("dimension", sa.String, nullable=False, index=True),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("points", sa.Float, nullable=False),
        sa.Column("severity", sa.String, nullable=False),
        sa.Column("description", sa.Text),
    )
    op.create_table(
        "evidence",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _call_id(index=True),
        sa.Column("rule_id", sa.String, nullable=False),
        sa.Column("turn_ids", sa.JSON, nullable=False),
        sa.Column("speaker", sa.String),
        sa.Column("start_s", sa.Float),
        sa.Column("end_s", sa.Float),
        sa.Column("text", sa.Text),
        sa.Column("note", sa.Text),
    )
    op.create_table(
        "verdicts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _call_id(index=True),
        sa.Column("flag_key", sa.String, nullable=False),
        sa.Column("label", sa.String, nullable=False),
        sa.Column("turn_id", sa.Integer),
        sa.Column("verdict", sa.String, nullable=False),
        sa.Column("reason", sa.String),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("reviewer", sa.String, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "human_scores",
        sa.Column("call_id", sa.String, primary_key=True),
        sa.Column("dimension", sa.String, primary_key=True),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("source", sa.String, nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("human_scores", "verdicts", "evidence", "rule_results", "events", "tags",
                  "turns", "dimension_scores", "calls"):
        op.drop_table(table)
