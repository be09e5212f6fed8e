"""The cloud core's exception tree.

CloudError
├── NotFound         a work order, order line, item … that does not exist
├── Conflict         an invalid state transition, a duplicate number, a second running order
├── Invalid          input the domain refuses (unknown item, quantity <= 0, naive timestamp)
├── Forbidden        the caller sees the thing but may not take this action on it
├── MasterDataError  plant.yaml is invalid (the message names the file and the field)
└── StorageError     the database failed or holds something the code cannot read
"""


class CloudError(Exception):
    """Base for every error raised by the cloud core."""


class NotFound(CloudError):  # noqa: N818 - names fixed by the cloud interface
    """The thing asked for does not exist."""


class Conflict(CloudError):  # noqa: N818 - names fixed by the cloud interface
    """The command conflicts with the current state (transition, duplicate, running order)."""


class Invalid(CloudError):  # noqa: N818 - names fixed by the cloud interface
    """Input the domain refuses."""


class Forbidden(CloudError):  # noqa: N818 - names fixed by the cloud interface
    """The caller may see the thing but not take this action on it (a supplier sending a PO)."""


class MasterDataError(CloudError):
    """The master data file is invalid; the message names the file and the field."""


class StorageError(CloudError):
    """The database failed, or its content cannot be read back."""
