"""The schema: migrations build it on an empty PostgreSQL (pytest-django's test
database starts empty), they match the models, and pgvector is really there."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db


def test_every_migration_is_applied_to_the_fresh_database():
    executor = MigrationExecutor(connection)

    assert executor.migration_plan(executor.loader.graph.leaf_nodes()) == []
    assert ("describer", "0001_initial") in executor.loader.applied_migrations


def test_the_models_need_no_new_migration():
    # Exits with status 1 when a model change has no migration.
    call_command("makemigrations", check=True, dry_run=True, verbosity=0)


def test_the_vector_extension_is_installed():
    with connection.cursor() as cursor:
        cursor.execute("SELECT extname FROM pg_extension WHERE extname = 'vector'")
        assert cursor.fetchall() == [("vector",)]


def test_examples_have_a_512_dimension_vector_column():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'describer_example'::regclass AND attname = 'embedding'"
        )
        assert cursor.fetchone() == ("vector(512)",)


def test_the_embedding_has_an_hnsw_cosine_index():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'describer_example' AND indexdef ILIKE '%%USING hnsw%%'"
        )
        [(definition,)] = cursor.fetchall()
    assert "(embedding vector_cosine_ops)" in definition
    assert "m='16'" in definition and "ef_construction='64'" in definition
