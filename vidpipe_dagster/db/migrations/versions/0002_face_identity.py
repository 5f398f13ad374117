"""face identity: engine and metric of embeddings, Tier 3 face scores, clip identity scores

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('face_embedding_engine', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('face_embedding_metric', sa.String(length=20), nullable=True))
    # before this revision insightface was the only engine: existing embeddings are its cosines
    op.execute(
        "UPDATE assets SET face_embedding_engine = 'insightface', face_embedding_metric = 'cosine' "
        "WHERE face_embedding IS NOT NULL"
    )

    op.create_table('clean_sheet_face_scores',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('clean_reference_id', sa.Uuid(), nullable=False),
    sa.Column('engine', sa.String(length=20), nullable=False),
    sa.Column('metric', sa.String(length=20), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('threshold', sa.Float(), nullable=False),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('try_number', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['clean_reference_id'], ['asset_clean_references.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('clean_reference_id')
    )

    op.create_table('clip_identity_scores',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('video_clip_id', sa.Uuid(), nullable=False),
    sa.Column('character_tag', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('engine', sa.String(length=20), nullable=True),
    sa.Column('metric', sa.String(length=20), nullable=True),
    sa.Column('best_score', sa.Float(), nullable=True),
    sa.Column('median_score', sa.Float(), nullable=True),
    sa.Column('threshold', sa.Float(), nullable=True),
    sa.Column('passed', sa.Boolean(), nullable=True),
    sa.Column('frames_found', sa.Integer(), nullable=False),
    sa.Column('frames_matched', sa.Integer(), nullable=False),
    sa.Column('frames_sampled', sa.Integer(), nullable=False),
    sa.Column('best_frame_time', sa.Float(), nullable=True),
    sa.Column('best_frame_url', sa.String(length=500), nullable=True),
    sa.Column('clip_fingerprint', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['video_clip_id'], ['video_clips.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('video_clip_id', 'character_tag')
    )
    with op.batch_alter_table('clip_identity_scores', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_clip_identity_scores_video_clip_id'), ['video_clip_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('clip_identity_scores', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_clip_identity_scores_video_clip_id'))
    op.drop_table('clip_identity_scores')
    op.drop_table('clean_sheet_face_scores')
    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.drop_column('face_embedding_metric')
        batch_op.drop_column('face_embedding_engine')
