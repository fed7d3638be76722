"""Host networks with named seed slots, and the `Host` protocol the rest of the engine relies on."""

from engine.hosts.base import Host, base_parameters, host_parameters, seed_parameters
from engine.hosts.cnn import CNNHost
from engine.hosts.transformer import TransformerHost

__all__ = ["CNNHost", "Host", "TransformerHost", "base_parameters", "host_parameters", "seed_parameters"]
