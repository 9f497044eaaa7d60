"""KV caches for the SliCK engine: a shared prefix's cache copied into a batch with room to grow in place.

``DynamicLayer.update`` concatenates the whole cache at every decoding step; ``RoomyLayer`` preallocates the
positions a batch will need and writes one position per step instead.
"""

from __future__ import annotations

import copy

import torch

try:  # transformers >= 4.56 (per-layer cache objects); older versions use the model's own cache handling
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover
    DynamicLayer = object


def repeat_cache(cache, n: int) -> None:
    if n != 1:
        cache.batch_repeat_interleave(n)


def roomy_cache(prefix_cache, rows: int, room: int):
    """A new cache for ``rows`` rows that starts with the one-row ``prefix_cache`` and has ``room`` spare positions
    per layer, so the tail prefill and decoding write in place instead of concatenating.

    Used only where every layer is a plain ``DynamicLayer`` (GPT-2, Llama, Qwen, Mistral without sliding windows,
    ...); returns None otherwise, and the caller falls back to the model's own cache handling.
    """
    layers = getattr(prefix_cache, "layers", None)
    if not layers or not all(type(layer) is DynamicLayer and layer.keys is not None and layer.keys.numel()
                             for layer in layers):
        return None
    cache = copy.copy(prefix_cache)
    cache.layers = [RoomyLayer(layer.keys, layer.values, rows, room) for layer in layers]
    return cache


class RoomyLayer(DynamicLayer):
    """A DynamicLayer over preallocated buffers; ``keys``/``values`` are views of the filled part.

    Updates write into the spare room (growing only if it runs out), so a decoding step does not copy the whole
    cache as ``DynamicLayer.update`` does. Batch selection and repetition act on the buffers.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, rows: int, room: int):
        super().__init__()
        length = keys.shape[-2]
        self.key_buffer = keys.new_empty((rows, keys.shape[1], length + room, keys.shape[-1]))
        self.value_buffer = values.new_empty((rows, values.shape[1], length + room, values.shape[-1]))
        self.key_buffer[:, :, :length] = keys.expand(rows, -1, -1, -1)
        self.value_buffer[:, :, :length] = values.expand(rows, -1, -1, -1)
        self.length, self.device, self.is_initialized = length, keys.device, True
        self._views()

    def _views(self) -> None:
        self.keys = self.key_buffer[:, :, :self.length]
        self.values = self.value_buffer[:, :, :self.length]

    def update(self, key_states, value_states, *args, **kwargs):
        n = key_states.shape[-2]
        if self.length + n > self.key_buffer.shape[-2]:
            self.key_buffer = torch.cat([self.keys, key_states.new_empty((*self.keys.shape[:2], n + 16, self.keys.shape[-1]))], dim=-2)
            self.value_buffer = torch.cat([self.values, value_states.new_empty((*self.values.shape[:2], n + 16, self.values.shape[-1]))], dim=-2)
        self.key_buffer[:, :, self.length:self.length + n] = key_states
        self.value_buffer[:, :, self.length:self.length + n] = value_states
        self.length += n
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        self.length = max(0, self.length + tokens_to_remove)
        self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
        self._views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
        self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
        self._views()


