"""Frozen, validated configuration objects shared by target profiles, data manifests and the CLI.

Every config class is a frozen dataclass. ``from_mapping`` builds one from a TOML/JSON table, rejecting unknown keys
(naming the key and the allowed ones) and values of the wrong type; ``__post_init__`` checks rules between fields.
``to_mapping`` and ``dump_toml`` give the resolved value back, so it can be saved beside the artifacts it produced.
"""

from edgeprep.config.base import dump_toml, from_mapping, merge, to_mapping

__all__ = ["from_mapping", "to_mapping", "dump_toml", "merge"]
