"""The simulators' exception tree (see the package docstring)."""


class SimulatorError(Exception):
    """Base for every error raised by the simulators."""


class SimulatorConfigError(SimulatorError):
    """A simulator configuration that cannot be read or is invalid."""


class ControlError(SimulatorError):
    """A control (speed, command, run enable) that the machine cannot accept."""


class IllegalAddressError(ControlError):
    """A Modbus write to a register that is read-only or not in the map (exception code 2)."""


class IllegalValueError(ControlError):
    """A control value out of its range (Modbus exception code 3 when written over Modbus)."""
