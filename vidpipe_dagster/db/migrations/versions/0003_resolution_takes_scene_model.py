"""resolution and takes per project, a video model per scene, resolution and takes per ledger row

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resolution', sa.String(length=8), server_default='720p', nullable=False))
        batch_op.add_column(sa.Column('takes', sa.Integer(), server_default='1', nullable=False))

    with op.batch_alter_table('scenes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('video_model', sa.String(length=80), nullable=True))

    with op.batch_alter_table('generation_ledger', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resolution', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('takes', sa.Integer(), server_default='1', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('generation_ledger', schema=None) as batch_op:
        batch_op.drop_column('takes')
        batch_op.drop_column('resolution')

    with op.batch_alter_table('scenes', schema=None) as batch_op:
        batch_op.drop_column('video_model')

    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('takes')
        batch_op.drop_column('resolution')
