"""Build hook for the optional native hot path (edge_agent/inference/_hotpath.c).

Everything else is in pyproject.toml. ``optional=True``: where no C compiler or Python
headers exist, the install goes on without it and the agent serves through the
pure-Python path (see edge_agent/inference/hotpath.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "edge_agent.inference._hotpath",
            sources=["edge_agent/inference/_hotpath.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
