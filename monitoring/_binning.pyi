from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

def bin_batch(
    matrix: npt.NDArray[np.floating[Any]],
    outputs: tuple[npt.NDArray[np.floating[Any]], ...],
    plan: bytes,
    edges: bytes,
    edges32: bytes,
    counts: bytearray,
    slots: bytearray,
    row: int,
    /,
) -> None: ...

def edge_width() -> int: ...

def bin_batches(
    batches: list[tuple[Any, ...]],
    start: int,
    plan: bytes,
    edges: bytes,
    edges32: bytes,
    counts: bytearray,
    slots: bytearray,
    row: int,
    /,
) -> tuple[int, int, int]: ...

class Tap:
    pending_rows: int
    dropped_rows: int
    refused: bool
    def __init__(
        self,
        plan: bytes,
        edges: bytes,
        edges32: bytes,
        size: int,
        input_index: int,
        output_indices: tuple[int, ...],
        chunk_rows: int,
        max_pending_rows: int,
        fallback: Callable[[Sequence[Any], Sequence[Any]], object],
    ) -> None: ...
    def __call__(self, inputs: Sequence[Any], outputs: Sequence[Any], /) -> object: ...
    def take(self) -> list[tuple[int, bytearray, bytearray]]: ...
