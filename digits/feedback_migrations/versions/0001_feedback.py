"""Feedback rows, fine-tune rounds and what each learned, and the client-hash salt.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("label", sa.SmallInteger, nullable=False),
        sa.Column("predicted", sa.SmallInteger, nullable=True),
        sa.Column("model_version", sa.Integer, nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("client", sa.String(32), nullable=False),
        sa.Column("image", sa.LargeBinary, nullable=False),
        sa.Column("image_format", sa.String(8), nullable=False),
        sa.Column("pixels", sa.LargeBinary, nullable=False),
        sa.CheckConstraint("label >= 0 AND label <= 9", name="feedback_label_digit"),
        sqlite_autoincrement=True,
    )
    op.create_index("feedback_request_id", "feedback", ["request_id"], unique=True)
    op.create_index("feedback_client", "feedback", ["client"])
    op.create_table(
        "finetunes",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("base_version", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("max_feedback_id", sa.Integer, nullable=False),
        sa.Column("trained", sa.Integer, nullable=False),
        sa.Column("held_out", sa.Integer, nullable=False),
        sa.Column("promoted", sa.Boolean, nullable=False),
    )
    op.create_table(
        "feedback_learned",
        sa.Column("feedback_id", sa.Integer, sa.ForeignKey("feedback.id"), primary_key=True),
        sa.Column("version", sa.Integer, sa.ForeignKey("finetunes.version"), primary_key=True),
    )
    meta = op.create_table(
        "feedback_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    # The salt of the client hashes, made once per database so that every API process
    # and host hashes a client alike. FEEDBACK_SALT, when set, is used instead.
    op.bulk_insert(meta, [{"key": "client_salt", "value": secrets.token_hex(32)}])


def downgrade() -> None:
    op.drop_table("feedback_meta")
    op.drop_table("feedback_learned")
    op.drop_table("finetunes")
    op.drop_index("feedback_client", table_name="feedback")
    op.drop_index("feedback_request_id", table_name="feedback")
    op.drop_table("feedback")
