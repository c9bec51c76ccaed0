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
