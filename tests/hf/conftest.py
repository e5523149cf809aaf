"""Without transformers (the ``hf`` extra), nothing here is collected."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("transformers") else ["test_*.py"]
