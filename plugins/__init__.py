"""Compressor discovery through the `ctxzip.compressors` entry-point group.

Built-ins and third-party packages register the same way, in their `pyproject.toml`::

    [project.entry-points."ctxzip.compressors"]
    my-method = "my_package.module:MyCompressor"

Discovery only reads metadata; a plugin's code is imported when first used, and a
plugin that fails to import is reported (`ctxzip plugins`) rather than fatal.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

GROUP = "ctxzip.compressors"


@dataclass(frozen=True)
class PluginEntry:
    """A compressor name and where it comes from."""

    name: str
    target: str  # "module:attr"
    distribution: str  # "ctxzip 0.1.0", or "module:attr" for direct references
    entry_point: EntryPoint | None = None

    @property
    def builtin(self) -> bool:
        return self.distribution.split(" ")[0] == "ctxzip"


def discover() -> dict[str, PluginEntry]:
    """Every registered compressor by name; built-ins win a name clash with third parties."""
    found: dict[str, PluginEntry] = {}
    for ep in entry_points(group=GROUP):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown"
        entry = PluginEntry(ep.name, ep.value, dist, ep)
        if ep.name in found and found[ep.name].builtin:
            continue
        found[ep.name] = entry
    return dict(sorted(found.items()))
