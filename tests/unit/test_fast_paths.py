"""Hot-path specialisations agree with the general code they stand in for: the compiled v1 decoder
with decode_predict, the one-output v1 encoder with the _jsonable route, split_outputs with
np.split, and a uniform MicroBatcher with one that compares batch keys."""

from __future__ import annotations

import asyncio
import json
import warnings
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.batching import Arrays, MicroBatcher, split_outputs
from gateway.errors import InvalidInput
from gateway.protocol import v1
from gateway.protocol.v1 import _jsonable
from registry.entities import TensorSpec

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FP32_MAX = float(np.finfo(np.float32).max)
EDGE = [0.0, -0.0, 1e-320, FP32_MAX, -FP32_MAX, float(2**128 - 2**103), float(np.nextafter(2**128 - 2**103, 0)),
        3.4028235e38, 1e39, -1e39, 1e200, 1.7e308, 2**63, 2**64 - 1, 2**70]

finite = st.floats(allow_nan=False, allow_infinity=False)
numbers = st.one_of(finite, finite, st.integers(min_value=-(2**31), max_value=2**31), st.sampled_from(EDGE),
                    st.integers(min_value=-(2**70), max_value=2**70))
leaves: st.SearchStrategy[Any] = numbers | st.booleans() | st.none() | st.text(max_size=3) | st.just([]) | st.just({})


def well_formed(width: int) -> st.SearchStrategy[Any]:
    """{"instances": [[width numbers], ...]}: the body the fast path is for."""
    return st.fixed_dictionaries({"instances": st.lists(st.lists(numbers, min_size=width, max_size=width),
                                                        min_size=1, max_size=4)})


def documents(width: int, name: str) -> st.SearchStrategy[Any]:
    """Half well-formed bodies; the rest ragged, odd-typed, odd-width, row-dict, columnar or not objects."""
    good_row = st.lists(numbers, min_size=width, max_size=width)
    odd_row = st.lists(leaves, max_size=width + 1) | leaves
    rows = st.lists(st.one_of(good_row, good_row, odd_row), min_size=0, max_size=4)
    return st.one_of(
        well_formed(width), well_formed(width), well_formed(width), well_formed(width),
        st.fixed_dictionaries({"instances": rows}),
        st.fixed_dictionaries({"instances": rows}, optional={"inputs": rows, "parameters": leaves}),
        st.fixed_dictionaries({"instances": st.lists(st.fixed_dictionaries({name: good_row}), min_size=1, max_size=3)}),
        st.fixed_dictionaries({"inputs": rows}),
        rows,
        leaves,
    )


def outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """('ok', {name: (dtype, shape, bytes)}) or ('error', type name and message)."""
    try:
        result = fn(*args, **kwargs)
    except InvalidInput as exc:
        return "error", (type(exc).__name__, str(exc))
    return "ok", {k: (a.dtype.str, a.shape, a.tobytes()) for k, a in result.items()}


class TestCompiledPredictDecoder:
    @SETTINGS
    @given(data=st.data(), datatype=st.sampled_from(["FP32", "FP64"]), width=st.integers(min_value=1, max_value=4))
    def test_fast_signature_matches_decode_predict(self, data: st.DataObject, datatype: str, width: int) -> None:
        """For a single [-1, F] float input, the compiled decoder returns exactly what decode_predict returns
        (same dtype, shape and bits) or raises the same InvalidInput with the same message."""
        spec = (TensorSpec("x", datatype, (-1, width)),)
        body = json.dumps(data.draw(documents(width, "x"))).encode()  # json: integers past 64 bits too
        assert outcome(v1.compile_predict_decoder(spec), body) == outcome(v1.decode_predict, body, spec)

    @SETTINGS
    @given(body=st.binary(max_size=64))
    def test_invalid_json_is_refused_alike(self, body: bytes) -> None:
        """Bodies that are not JSON (or not objects) get decode_predict's own refusal."""
        spec = (TensorSpec("x", "FP32", (-1, 2)),)
        assert outcome(v1.compile_predict_decoder(spec), body) == outcome(v1.decode_predict, body, spec)

    @pytest.mark.parametrize("value", EDGE)
    def test_fp32_range_edges(self, value: float) -> None:
        """Values at and around the float32 overflow point are accepted or refused exactly as before."""
        spec = (TensorSpec("x", "FP32", (-1, 2)),)
        body = json.dumps({"instances": [[value, 1.0]]}).encode()
        assert outcome(v1.compile_predict_decoder(spec), body) == outcome(v1.decode_predict, body, spec)

    def test_fast_path_raises_no_numpy_warning(self) -> None:
        """Refusing an overflowing value emits no RuntimeWarning from the overflow check."""
        decode = v1.compile_predict_decoder((TensorSpec("x", "FP32", (-1, 2)),))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(InvalidInput, match="value out of range for FP32"):
                decode(orjson.dumps({"instances": [[1e300, 1.0]]}))
            assert decode(orjson.dumps({"instances": [[FP32_MAX, 1.0]]}))["x"][0, 0] == np.float32(FP32_MAX)

    def test_max_elements_is_kept(self) -> None:
        """The element limit applies on the fast path too."""
        decode = v1.compile_predict_decoder((TensorSpec("x", "FP32", (-1, 2)),), max_elements=3)
        with pytest.raises(InvalidInput, match="over the limit of 3"):
            decode(orjson.dumps({"instances": [[1.0, 2.0], [3.0, 4.0]]}))

    @pytest.mark.parametrize(
        "specs",
        [
            (TensorSpec("x", "INT64", (-1, 2)),),
            (TensorSpec("x", "FP16", (-1, 2)),),
            (TensorSpec("x", "FP32", (-1,)),),
            (TensorSpec("x", "FP32", (-1, 2, 2)),),
            (TensorSpec("x", "FP32", (-1, 2)), TensorSpec("y", "FP32", (-1, 2))),
        ],
    )
    def test_other_signatures_use_the_general_decoder(self, specs: tuple[TensorSpec, ...]) -> None:
        """Signatures without a fast path decode exactly as decode_predict does."""
        body = orjson.dumps({"instances": [[1, 2], [3, 4]]})
        assert outcome(v1.compile_predict_decoder(specs), body) == outcome(v1.decode_predict, body, specs)


def reference_encode(outputs: list[tuple[str, np.ndarray]]) -> bytes:
    name, array = outputs[0]
    return orjson.dumps({"predictions": _jsonable(name, array)}, option=orjson.OPT_SERIALIZE_NUMPY)


class TestEncodeOneOutput:
    @SETTINGS
    @given(
        array=hnp.arrays(
            st.sampled_from(["<f4", ">f4", "<f8", "<f2", "<i8", ">i4", "<u2", "|u1", "|i1", "|b1"]),
            hnp.array_shapes(min_dims=0, max_dims=3, max_side=3),
            elements={"allow_nan": False, "allow_infinity": False},
        ),
        strided=st.booleans(),
    )
    def test_matches_the_general_encoding(self, array: np.ndarray, strided: bool) -> None:
        """One output encodes to the same bytes as through _jsonable, for any dtype, byte order and layout."""
        if strided and array.ndim:
            array = array[::2]
        assert v1.encode_predict([("y", array)]) == reference_encode([("y", array)])


def reference_split(outputs: Arrays, sizes: list[int]) -> list[Arrays]:
    bounds = np.cumsum(sizes)[:-1]
    per_output = [np.split(out, bounds, axis=0) for out in outputs]
    return [[parts[i] for parts in per_output] for i in range(len(sizes))]


class TestSplitOutputs:
    @SETTINGS
    @given(sizes=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=8),
           n_outputs=st.integers(min_value=1, max_value=3), width=st.integers(min_value=1, max_value=3))
    def test_matches_np_split(self, sizes: list[int], n_outputs: int, width: int) -> None:
        """Slices over running offsets give the same per-request parts as np.split, as views."""
        total = sum(sizes)
        outputs: Arrays = [np.arange(total * width, dtype=np.float32).reshape(total, width) + 100 * k for k in range(n_outputs)]
        got, want = split_outputs(outputs, sizes), reference_split(outputs, sizes)
        assert len(got) == len(want) == len(sizes)
        for g, w in zip(got, want, strict=True):
            assert len(g) == len(w) == n_outputs
            for k, (a, b) in enumerate(zip(g, w, strict=True)):
                assert a.shape == b.shape
                np.testing.assert_array_equal(a, b)
                assert np.shares_memory(a, outputs[k])  # a view, not a copy


def _run_batches(uniform: bool, sizes: list[int], max_rows: int) -> tuple[list[int], list[tuple[int, str]], list[Arrays]]:
    calls: list[int] = []
    seen: list[tuple[int, str]] = []

    def run(arrays: Arrays) -> Arrays:
        calls.append(int(arrays[0].shape[0]))
        return [arrays[0] * 2]

    async def main() -> list[Arrays]:
        b = MicroBatcher(run, max_batch_size=max_rows, max_delay_s=0, executor=None, uniform=uniform,
                         observe=lambda n, w, r: seen.append((n, r)))
        inputs = [np.full((n, 2), i, dtype=np.float32) for i, n in enumerate(sizes)]
        return await asyncio.gather(*(b.submit([x]) for x in inputs))

    return calls, seen, asyncio.run(main())


class TestUniformBatcher:
    @SETTINGS
    @given(sizes=st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=12),
           max_rows=st.integers(min_value=1, max_value=16))
    def test_uniform_takes_the_same_batches(self, sizes: list[int], max_rows: int) -> None:
        """With uniform=True the batcher runs the same batches, reports the same rows and reasons, and
        gives every request its own rows back, as when it compares batch keys."""
        calls_u, seen_u, results_u = _run_batches(True, sizes, max_rows)
        calls_g, seen_g, results_g = _run_batches(False, sizes, max_rows)
        assert calls_u == calls_g and seen_u == seen_g
        for i, (ru, rg) in enumerate(zip(results_u, results_g, strict=True)):
            np.testing.assert_array_equal(ru[0], rg[0])
            np.testing.assert_array_equal(ru[0], np.full((sizes[i], 2), 2 * i, dtype=np.float32))
