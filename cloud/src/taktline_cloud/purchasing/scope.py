"""Who may see and act on a purchase order: a supplier user only on its own, sent orders.

The rule (pure, for the API to enforce):

* an internal user (a buyer; `supplier` None) sees every order and may take every action — the
  organisation's grants narrow that by plant elsewhere, not here;
* a supplier user sees only its own supplier's orders, and not drafts (an order it has not been
  sent does not exist for it yet); on those it may view and confirm (dates and quantities),
  nothing else: sending, receiving, cancelling and closing are the buyer's;
* an order a user may not see is reported as not found, so a supplier cannot learn another
  supplier's order numbers; an action it may not take on an order it sees is `Forbidden`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from taktline_cloud.errors import Forbidden, NotFound
from taktline_cloud.purchasing.orders import PoStatus, PurchaseOrder


class Action(StrEnum):
    """What a user does to a purchase order."""

    VIEW = "view"
    SEND = "send"
    CONFIRM = "confirm"
    RECEIVE = "receive"
    CANCEL = "cancel"
    CLOSE = "close"


SUPPLIER_ACTIONS: Final = frozenset({Action.VIEW, Action.CONFIRM})
"""The actions a supplier user may take on its own orders."""


@dataclass(frozen=True, slots=True)
class Actor:
    """A user; `supplier` is the supplier code of a supplier user, None for an internal one."""

    user: str
    supplier: str | None = None


def can_see(actor: Actor, order: PurchaseOrder) -> bool:
    """True when the order exists for this user (the module's rule)."""
    if actor.supplier is None:
        return True
    return order.supplier == actor.supplier and order.status is not PoStatus.DRAFT


def visible_orders(actor: Actor, orders: Iterable[PurchaseOrder]) -> list[PurchaseOrder]:
    """The orders this user may see, in the given order."""
    return [order for order in orders if can_see(actor, order)]


def can_act(actor: Actor, order: PurchaseOrder, action: Action) -> bool:
    """True when the user may take `action` on the order (its status is checked elsewhere)."""
    if not can_see(actor, order):
        return False
    return actor.supplier is None or action in SUPPLIER_ACTIONS


def require(actor: Actor, order: PurchaseOrder, action: Action) -> None:
    """Raise NotFound for an order the user may not see, Forbidden for an action it may not take."""
    if not can_see(actor, order):
        raise NotFound(f"purchase order {order.number} not found")
    if not can_act(actor, order, action):
        raise Forbidden(f"{actor.user} may not {action} purchase order {order.number}")
