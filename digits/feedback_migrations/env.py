"""Alembic's environment for the feedback schema: always run on a connection that
``digits.feedback_db.upgrade`` has opened (and locked), never from an alembic.ini."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
