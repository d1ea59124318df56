"""The workflow: rootml's yadage DAG (``workflows/``, ``steps/``) run locally or in Docker.

- :mod:`.plugin` is the packtivity plugin every run loads (``yadage-run --plugins
  rootml.workflow.plugin``): steps as local processes, or packtivity's own Docker handler,
  each leaving a step record with its times, engine and image.
- :mod:`.run` is ``rootml run``: prepares the input, picks the engine, starts the embedded
  server, drives ``yadage-run`` with a progress display and prints the summary.
"""

from pathlib import Path

#: each step's record, relative to its folder (written by the plugin, read by the runner)
RECORD = Path("_rootml") / "step.json"
