"""MRP: run the planner on the plant's data, and read the latest run's planned orders,
action messages and pegging.

A run can go on in the background (`POST /api/mrp/runs?background=true`: 202 and its job):
its inputs are read on the service's worker thread, the plan is made on a thread of its own
(the worker stays free for samples and reads), and the result is stored on the worker again.
Its progress is readable at /api/mrp/runs/current (or jobs/{job}) and goes live as throttled
`mrp.progress` events, then one `mrp.run.finished`. One run at a time: another POST while it
goes on is 409.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, Field

from taktline_cloud.api.deps import Context, Service
from taktline_cloud.api.schemas import ItemFilter
from taktline_cloud.errors import CloudError
from taktline_cloud.events import Event
from taktline_cloud.live.gateway import ServiceGateway
from taktline_cloud.planning_approve import approve
from taktline_cloud.planning_runs import Emit, MrpProgressRow, MrpStart
from taktline_cloud.readmodels import MrpExceptionRow, MrpRunRow, PeggingRow, PlannedOrderRow

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/mrp", tags=["mrp"])

_NO_RUN: dict[int | str, dict[str, Any]] = {404: {"description": "No MRP run yet, or no item"}}


_BACKGROUND: set[asyncio.Task[None]] = set()
"""Background runs in progress (a reference keeps each task alive until it ends)."""


def _emitter(service: ServiceGateway) -> Emit:
    """Hand events to the live hub from any thread (the planner's, the worker's)."""
    loop, hub = asyncio.get_running_loop(), service.hub

    def emit(events: Sequence[Event]) -> None:
        try:
            loop.call_soon_threadsafe(hub.publish, list(events))
        except RuntimeError:  # the loop is closed (shutting down): nobody is listening
            log.debug("MRP events after the event loop closed: dropped")

    return emit


async def _finish(service: ServiceGateway, start: MrpStart) -> None:
    """Plan off the worker thread, store on it; a failure ends the job as failed."""
    plant = service.service
    try:
        plan = await asyncio.to_thread(plant.plan_mrp_run, start)
        await service.command(lambda p: p.finish_mrp_run(start, plan))
    except Exception as exc:
        if isinstance(exc, CloudError):  # bad planning data, the planner lock elsewhere
            log.warning("MRP run job %s failed: %s", start.job.id, exc)
        else:
            log.exception("MRP run job %s failed", start.job.id)
        error = exc
        try:
            await service.apply(lambda p: p.fail_mrp_run(start, error))
        except Exception:  # the worker is gone (shutting down): nothing left to tell
            log.exception("MRP run job %s: its failure could not be recorded", start.job.id)


@router.post(
    "/runs",
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {"description": "The run is stored: its summary", "model": MrpRunRow},
        202: {"description": "Started in the background: its progress", "model": MrpProgressRow},
        409: {"description": "An MRP run is in progress (here, or holding the planner lock)"},
        422: {"description": "No master data loaded, or the planning data cannot be planned"},
    },
)
async def run(
    service: Service,
    response: Response,
    background: Annotated[
        bool,
        Query(description="start it and answer 202 with its job at once (progress: runs/current)"),
    ] = False,
) -> MrpRunRow | MrpProgressRow:
    """A regenerative run on the plant's data now; its result replaces the latest one. Its
    progress goes live (`mrp.progress`, then `mrp.run.finished`) either way."""
    emit = _emitter(service)
    if not background:
        return await service.command(lambda plant: plant.run_mrp(emit=emit))
    start = await service.worker.run(lambda: service.service.start_mrp_run(emit=emit))
    task = asyncio.create_task(_finish(service, start), name=f"mrp-run-{start.job.id}")
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    response.status_code = status.HTTP_202_ACCEPTED
    response.headers["Location"] = f"/api/mrp/runs/jobs/{start.job.id}"
    return start.job.row()


@router.get("/runs/latest", responses=_NO_RUN)
async def latest_run(service: Service) -> MrpRunRow:
    """The latest stored run's summary: when, how long, how many orders, pegs and messages."""
    return await service.read(lambda plant: plant.mrp_latest_run())


@router.get("/runs/current", responses={404: {"description": "No run started in this process"}})
async def current_run(service: Service) -> MrpProgressRow:
    """The progress of the latest regenerative run this process started: running (phase,
    items planned of all), finished (with the stored run's summary) or failed."""
    return service.service.mrp_progress()


@router.get("/runs/jobs/{job}", responses={404: {"description": "No such job (kept: the last 20)"}})
async def run_job(job: Annotated[int, Path(ge=1)], service: Service) -> MrpProgressRow:
    """One run's progress by its job number (what POST ?background=true answered)."""
    return service.service.mrp_progress(job)


@router.get("/runs/{run_id}", responses={404: {"description": "No such run (kept: the last 1000)"}})
async def stored_run(run_id: Annotated[int, Path(ge=1)], service: Service) -> MrpRunRow:
    """A stored run's summary by its id."""
    return await service.read(lambda plant: plant.mrp_run(run_id))


@router.get("/planned-orders", responses=_NO_RUN)
async def planned_orders(
    service: Service,
    item: ItemFilter = None,
    kind: Annotated[
        Literal["make", "buy"] | None,
        Query(description="make (work orders) or buy (purchase orders)"),
    ] = None,
) -> list[PlannedOrderRow]:
    """The latest run's planned orders, by item and due date."""
    return await service.read(lambda plant: plant.mrp_planned_orders(item, kind))


@router.get("/exceptions", responses=_NO_RUN)
async def exceptions(service: Service, item: ItemFilter = None) -> list[MrpExceptionRow]:
    """The latest run's action messages: expedite, defer, cancel, past due."""
    return await service.read(lambda plant: plant.mrp_exceptions(item))


@router.get(
    "/pegging",
    responses={
        404: {"description": "No MRP run yet, no such item, or the supply serves nothing"},
        422: {"description": "The supply id is a supply of several items: name the item"},
    },
)
async def pegging(
    service: Service,
    supply: Annotated[
        str,
        Query(
            min_length=1,
            description="a planned order (PLN/FG-100/2), a work order, or on-hand (with item)",
        ),
    ],
    item: ItemFilter = None,
) -> PeggingRow:
    """What a supply serves, traced up the BOM to the sales order lines behind it."""
    return await service.read(lambda plant: plant.mrp_pegging(supply, item))


class ApprovalOut(BaseModel):
    """The document an approved planned order became."""

    run: int = Field(description="the MRP run the planned order is of (ids are per run)")
    planned_order: PlannedOrderRow
    document: Literal["purchase_order", "work_order"]
    number: str = Field(description="the purchase order's or the work order's number")
    created: bool = Field(description="false: approved before, this is the same document")


@router.post(
    "/planned-orders/{planned_order:path}/approve",
    responses={
        200: {"description": "Approved before: the document it already became"},
        201: {"description": "The draft purchase order or the created work order"},
        404: {"description": "No MRP run yet, or no such planned order in the latest run"},
        409: {"description": "No supplier sells the item; an MRP run in progress"},
    },
    status_code=status.HTTP_201_CREATED,
)
async def approve_planned_order(
    planned_order: Annotated[str, Path(min_length=1, max_length=200)],
    service: Service,
    context: Context,
    response: Response,
) -> ApprovalOut:
    """Approve a planned order of the latest run: buy -> a draft purchase order (its supplier
    chosen by the sourcing rule), make -> a work order in status created. Idempotent per run:
    approving again answers the same document with 200 and `created: false`."""
    purchasing = context.purchasing
    if purchasing is None:
        raise RuntimeError("the cloud runs without purchasing: ApiContext.purchasing unset")
    approval = await service.command(lambda plant: approve(plant, purchasing, planned_order))
    if not approval.created:
        response.status_code = status.HTTP_200_OK
    return ApprovalOut(
        run=approval.run,
        planned_order=approval.planned_order,
        document=approval.document,
        number=approval.number,
        created=approval.created,
    )
