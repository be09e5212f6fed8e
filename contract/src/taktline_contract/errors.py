"""The contract's exception tree (see the package docstring)."""


class ContractError(Exception):
    """Base for every error raised by the MQTT contract."""


class TopicError(ContractError):
    """A topic that does not follow the Sparkplug B namespace."""


class PayloadError(ContractError):
    """A payload that cannot be decoded, or decodes to something the specification forbids."""
