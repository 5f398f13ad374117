"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-24 10:56:45.951583
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('generation_ledger',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('model', sa.String(length=80), nullable=False),
    sa.Column('backend', sa.String(length=20), nullable=False),
    sa.Column('project_slug', sa.String(length=64), nullable=True),
    sa.Column('subject', sa.String(length=120), nullable=True),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('operation_name', sa.String(length=500), nullable=True),
    sa.Column('billed', sa.Boolean(), nullable=False),
    sa.Column('cost_usd', sa.Float(), nullable=False),
    sa.Column('result_url', sa.String(length=500), nullable=True),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('generation_ledger', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_generation_ledger_fingerprint'), ['fingerprint'], unique=False)
        batch_op.create_index(batch_op.f('ix_generation_ledger_project_slug'), ['project_slug'], unique=False)

    op.create_table('manifests',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('assets',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('manifest_id', sa.Uuid(), nullable=False),
    sa.Column('asset_key', sa.String(length=80), nullable=False),
    sa.Column('manifest_tag', sa.String(length=40), nullable=False),
    sa.Column('asset_type', sa.String(length=20), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('reference_image_url', sa.String(length=500), nullable=True),
    sa.Column('original_sha256', sa.String(length=64), nullable=True),
    sa.Column('reverse_prompt', sa.Text(), nullable=True),
    sa.Column('quality_score', sa.Float(), nullable=True),
    sa.Column('is_face_crop', sa.Boolean(), nullable=False),
    sa.Column('source_asset_id', sa.Uuid(), nullable=True),
    sa.Column('face_embedding', sa.LargeBinary(), nullable=True),
    sa.ForeignKeyConstraint(['manifest_id'], ['manifests.id'], ),
    sa.ForeignKeyConstraint(['source_asset_id'], ['assets.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('manifest_id', 'asset_key')
    )
    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assets_manifest_id'), ['manifest_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_assets_manifest_tag'), ['manifest_tag'], unique=False)

    op.create_table('projects',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('slug', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('target_clip_duration', sa.Integer(), nullable=False),
    sa.Column('aspect_ratio', sa.String(length=8), nullable=False),
    sa.Column('video_model', sa.String(length=80), nullable=False),
    sa.Column('manifest_id', sa.Uuid(), nullable=True),
    sa.Column('archived', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['manifest_id'], ['manifests.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_projects_slug'), ['slug'], unique=True)

    op.create_table('asset_clean_references',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('asset_id', sa.Uuid(), nullable=False),
    sa.Column('tier', sa.String(length=20), nullable=False),
    sa.Column('clean_image_url', sa.String(length=500), nullable=False),
    sa.Column('generation_prompt', sa.Text(), nullable=True),
    sa.Column('face_similarity_score', sa.Float(), nullable=True),
    sa.Column('quality_score', sa.Float(), nullable=True),
    sa.Column('is_primary', sa.Boolean(), nullable=False),
    sa.Column('generation_cost', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['asset_id'], ['assets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('asset_clean_references', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_asset_clean_references_asset_id'), ['asset_id'], unique=False)

    op.create_table('scene_manifests',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('project_id', sa.Uuid(), nullable=False),
    sa.Column('scene_index', sa.Integer(), nullable=False),
    sa.Column('manifest_json', sa.JSON(), nullable=False),
    sa.Column('selected_reference_tags', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'scene_index')
    )
    with op.batch_alter_table('scene_manifests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scene_manifests_project_id'), ['project_id'], unique=False)

    op.create_table('scenes',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('project_id', sa.Uuid(), nullable=False),
    sa.Column('scene_index', sa.Integer(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'scene_index')
    )
    with op.batch_alter_table('scenes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scenes_project_id'), ['project_id'], unique=False)

    op.create_table('keyframes',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('scene_id', sa.Uuid(), nullable=False),
    sa.Column('position', sa.String(length=8), nullable=False),
    sa.Column('image_url', sa.String(length=500), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['scene_id'], ['scenes.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('scene_id', 'position')
    )
    with op.batch_alter_table('keyframes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_keyframes_scene_id'), ['scene_id'], unique=False)

    op.create_table('video_clips',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('scene_id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('backend', sa.String(length=20), nullable=True),
    sa.Column('file_url', sa.String(length=500), nullable=True),
    sa.Column('duration_seconds', sa.Float(), nullable=True),
    sa.Column('conditioning_mode', sa.String(length=20), nullable=True),
    sa.Column('conditioning_reason', sa.Text(), nullable=True),
    sa.Column('remediation_level', sa.Integer(), nullable=False),
    sa.Column('operation_name', sa.String(length=500), nullable=True),
    sa.Column('fingerprint', sa.String(length=64), nullable=True),
    sa.Column('reference_tags', sa.JSON(), nullable=True),
    sa.Column('cost_usd', sa.Float(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('cached', sa.Boolean(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['scene_id'], ['scenes.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('scene_id')
    )



def downgrade() -> None:

    op.drop_table('video_clips')
    with op.batch_alter_table('keyframes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_keyframes_scene_id'))

    op.drop_table('keyframes')
    with op.batch_alter_table('scenes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scenes_project_id'))

    op.drop_table('scenes')
    with op.batch_alter_table('scene_manifests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scene_manifests_project_id'))

    op.drop_table('scene_manifests')
    with op.batch_alter_table('asset_clean_references', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_asset_clean_references_asset_id'))

    op.drop_table('asset_clean_references')
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_projects_slug'))

    op.drop_table('projects')
    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_assets_manifest_tag'))
        batch_op.drop_index(batch_op.f('ix_assets_manifest_id'))

    op.drop_table('assets')
    op.drop_table('manifests')
    with op.batch_alter_table('generation_ledger', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_generation_ledger_project_slug'))
        batch_op.drop_index(batch_op.f('ix_generation_ledger_fingerprint'))

    op.drop_table('generation_ledger')

