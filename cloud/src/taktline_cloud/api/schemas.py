"""Request bodies and API-only responses (responses about the plant are the core's read models)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class WorkOrderCreate(BaseModel):
    """A new work order: make `quantity` of `item` on `line` (number given, or assigned)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item: Code = Field(examples=["FG-100"])
    quantity: Decimal = Field(gt=0, allow_inf_nan=False, examples=["1000"])
    line: Code = Field(examples=["LINE-1"])
    number: Code | None = Field(None, examples=["WO-1001"])


class Health(BaseModel):
    """Is the cloud up, and is it connected to the broker."""

    status: Literal["ok", "degraded"]
    mqtt_connected: bool
    edge_nodes: dict[str, list[str]] = Field(
        description="online edge nodes with their online devices"
    )
    live_clients: int
