"""a project's owners (shown in the UI); a clip's takes and which one is chosen, and why

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owners', sa.JSON(), nullable=True))
    with op.batch_alter_table('video_clips', schema=None) as batch_op:
        batch_op.add_column(sa.Column('take_urls', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('chosen_take', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('take_choice', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('video_clips', schema=None) as batch_op:
        batch_op.drop_column('take_choice')
        batch_op.drop_column('chosen_take')
        batch_op.drop_column('take_urls')
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('owners')
