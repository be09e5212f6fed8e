"""The edge agent's exception tree (drawn in the package docstring)."""


class EdgeError(Exception):
    """Base for every error raised by the edge agent."""


class EdgeConfigError(EdgeError):
    """The configuration is invalid; the message names the file, line, field and problem."""


class TagError(EdgeError):
    """Register words that do not decode as the tag's type, or a value a tag cannot take."""


class DriverError(EdgeError):
    """A device read or write failed: no connection, a timeout or a Modbus exception reply."""


class OutboxError(EdgeError):
    """The durable outbox cannot store or read samples."""


class OutboxFullError(OutboxError):
    """The outbox reached its configured size bound; new samples are refused until it drains."""


class CommandError(EdgeError):
    """A command (NCMD/DCMD) that cannot be carried out, e.g. a write to a read-only tag."""
