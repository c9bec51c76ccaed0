"""The textbook server: FastAPI + a pydantic request model + session.run per request, as tutorials write it.

A plain `def` handler (FastAPI runs it in its threadpool, as its docs advise for blocking calls), the
body validated into a pydantic model, the rows turned into an ndarray, the outputs returned as lists.
One deviation from tutorials: the session's thread counts are set to 1, as for every server here,
because onnxruntime's default intra-op threads escape taskset and would run on wrk's core.
Runs in the benchmark's own virtual environment (loadtests/bench/.venv), not the gateway's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

from loadtests.bench.servers import arguments, serve


class PredictRequest(BaseModel):
    instances: list[list[float]]


def create_app(model_path: str, path: str) -> FastAPI:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    app = FastAPI()

    @app.post(path)
    def predict(request: PredictRequest) -> dict[str, Any]:
        features = np.array(request.instances, dtype=np.float32)
        outputs = session.run(None, {input_name: features})
        return {"predictions": outputs[0].tolist()}

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    return app


if __name__ == "__main__":
    args = arguments(__doc__ or "", model=True)
    serve(create_app(args.model, args.path), args.port)
