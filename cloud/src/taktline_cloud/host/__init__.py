"""The Sparkplug B primary host: MQTT sessions, metric → sample conversion, batched ingestion."""

from taktline_cloud.host.batcher import Batcher, IngestItem, IngestSink
from taktline_cloud.host.primary import HostOptions, PrimaryHost
from taktline_cloud.host.sessions import NodeStatus, SparkplugSessions

__all__ = [
    "Batcher",
    "HostOptions",
    "IngestItem",
    "IngestSink",
    "NodeStatus",
    "PrimaryHost",
    "SparkplugSessions",
]
