"""A `m3rec eval --engine ray` driver process with scripted models, for tests that kill it.

    python -m tests.eval_ray_driver OUT_DIR USERS WORKERS [slow]

The CLI cannot inject models, so this calls `run_evaluation` as `m3rec eval` does, with
`scripted_models` in the driver and in every Ray worker (`slow_scripted_models` there
with `slow`). It does not start Ray itself: the engine must start its own local runtime,
and stop it. It prints `runtime: started by the engine and stopped` at the end when so.
"""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ray

from m3rec_graph.context import M3RecContext
from m3rec_graph.evaluation import EvalSettings, parse_methods, run_evaluation
from m3rec_graph.evaluation.sharded import EvalEngine
from tests.fakes import scripted_models, slow_scripted_models

BEAUTY = Path(__file__).parents[1] / "tests" / "fixtures" / "beauty_small"
METHODS = "popularity,m3rec:hybrid"


@contextmanager
def served(ctx: M3RecContext) -> Iterator[None]:
    yield


def main(argv: list[str]) -> None:
    out, users, workers = Path(argv[0]), int(argv[1]), int(argv[2])
    slow = len(argv) > 3 and argv[3] == "slow"
    assert not ray.is_initialized()
    run_evaluation(
        EvalSettings(dataset=BEAUTY, users=users, negatives=9, seed=0),
        parse_methods(METHODS),
        out,
        cold_start=2,
        concurrency=1,
        chat_models=scripted_models(),
        serve=served,
        n_boot=0,
        plots=False,
        engine=EvalEngine(
            kind="ray",
            workers=workers,
            worker_chat_models=slow_scripted_models if slow else scripted_models,
        ),
    )
    if not ray.is_initialized():
        sys.stdout.write("runtime: started by the engine and stopped\n")


if __name__ == "__main__":
    main(sys.argv[1:])
