"""What every phase shares, below all of them (a phase never imports a later phase; core imports no phase):

- `scoring`: the one scorer (every metric of a task, the dummy baseline, the verdict), the search's ranking
  metric and its fast score, and the one imbalance rule;
- `portable/`: the runtime every deployment package carries (`inference.py`, `preprocessing.py`,
  `ensemble.py`), which prepare, search, predict and the package itself all run;
- `architectures`: the architecture catalog; `tasks`: task types; `plots`: training and evaluation pictures;
  `lazy`: lazy imports that keep the server's start free of numpy and pandas.

The project's exceptions stay in `ml_expert.memory.errors`, the bottom layer that memory, tools and server all
import (memory imports nothing from tools).
"""
