"""Live side of the cloud: the single service worker thread and the websocket fan-out hub."""

from taktline_cloud.live.gateway import ServiceGateway, ServiceWorker
from taktline_cloud.live.hub import SNAPSHOT, LiveHub, LiveSubscription, Resync

__all__ = ["SNAPSHOT", "LiveHub", "LiveSubscription", "Resync", "ServiceGateway", "ServiceWorker"]
