"""YAML as suites and component files are read: ``yaml.safe_load``, but a key written twice in one mapping is an error.

PyYAML keeps the last of two equal keys without a word, so a second ``train:`` section silently replaced the
first one (and every key in it). ``load`` refuses it, naming the key and both lines. Merge keys (``<<: *base``)
still override as YAML says they do.
"""

from __future__ import annotations

import yaml
from yaml.constructor import ConstructorError

MERGE_TAG = "tag:yaml.org,2002:merge"


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys in a mapping."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    continue
                if first is not key_node:
                    raise ConstructorError(None, None, f"duplicate key '{key}' (first at line "
                                           f"{first.start_mark.line + 1}); write each key once",
                                           key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load(text: str):
    """``yaml.safe_load(text)`` with duplicate keys refused (``UniqueKeyLoader``)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
