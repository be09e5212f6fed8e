"""Storage: one schema on SQLite or PostgreSQL, versioned migrations, the service's session."""

from taktline_cloud.storage.database import Database
from taktline_cloud.storage.session import Session

__all__ = ["Database", "Session"]
