"""Request bodies and API-only responses (responses about the plant are the core's read models)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
ItemFilter = Annotated[str | None, Query(min_length=1, description="only this item")]
LocationFilter = Annotated[
    str | None, Query(min_length=1, description="only this location (virtual ones too)")
]


class WorkOrderCreate(BaseModel):
    """A new work order: make `quantity` of `item` on `line` (number given, or assigned)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item: Code = Field(examples=["FG-100"])
    quantity: Decimal = Field(gt=0, allow_inf_nan=False, examples=["1000"])
    line: Code = Field(examples=["LINE-1"])
    number: Code | None = Field(None, examples=["WO-1001"])


class ReservationCreate(BaseModel):
    """Hold `quantity` of `item` at `location` for a demand (work order or sales order line)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item: Code = Field(examples=["RM-HOUSING"])
    location: Code = Field(examples=["WH1/RAW"])
    demand: Code = Field(
        description="a work order number (for one of its components) or a sales order line",
        examples=["WO-1001", "SO-1001/1"],
    )
    quantity: Decimal = Field(gt=0, allow_inf_nan=False, examples=["1000"])


class ReceiptCreate(BaseModel):
    """Stock received from a supplier into a store at a known cost per unit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item: Code = Field(examples=["RM-HOUSING"])
    location: Code = Field(examples=["WH1/RAW"])
    quantity: Decimal = Field(gt=0, allow_inf_nan=False, examples=["2000"])
    unit_cost: Decimal = Field(ge=0, allow_inf_nan=False, examples=["14.50"])
    reference: Code = Field(description="the delivery note or PO", examples=["PO-7"])


class ReservationConsume(BaseModel):
    """How much of a reservation to turn into a stock move (all that is open when left out)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantity: Decimal | None = Field(None, gt=0, allow_inf_nan=False, examples=["10"])


class Health(BaseModel):
    """Is the cloud up, and is it connected to the broker."""

    status: Literal["ok", "degraded"]
    mqtt_connected: bool
    edge_nodes: dict[str, list[str]] = Field(
        description="online edge nodes with their online devices"
    )
    live_clients: int
