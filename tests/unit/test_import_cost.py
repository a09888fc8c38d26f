"""`import m3rec_graph` stays cheap: no compiled graph, no evaluation stack, the public names intact."""

import json
import subprocess
import sys

PROBE = """
import json, sys
import m3rec_graph
loaded = {name: name in sys.modules for name in ("m3rec_graph.graph", "m3rec_graph.evaluation", "torch", "matplotlib", "langchain_openai", "openai", "langsmith")}
graph = m3rec_graph.graph  # first access compiles the default graph
import m3rec_graph.graph as graph_module  # the submodule import must not rebind the public name
print(json.dumps({
    "before": loaded,
    "after": "m3rec_graph.graph" in sys.modules,
    "compiled": type(graph).__name__,
    "still_compiled": type(m3rec_graph.graph).__name__,
    "same_builder": m3rec_graph.build_graph is sys.modules["m3rec_graph.graph"].build_graph,
}))
"""


def test_import_loads_neither_the_graph_nor_the_evaluation_stack() -> None:
    # A fresh interpreter: this test process has long imported everything.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["before"] == {
        "m3rec_graph.graph": False,
        "m3rec_graph.evaluation": False,
        "torch": False,
        "matplotlib": False,
        # every public name is lazy: the provider and tracing stacks load on first use
        "langchain_openai": False,
        "openai": False,
        "langsmith": False,
    }
    assert report["after"] is True
    assert report["compiled"] == report["still_compiled"] == "CompiledStateGraph"
    assert report["same_builder"] is True


def test_every_public_name_resolves() -> None:
    import m3rec_graph

    missing = [name for name in m3rec_graph.__all__ if not hasattr(m3rec_graph, name)]
    assert missing == []
