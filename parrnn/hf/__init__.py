"""Hugging Face ``transformers`` integration: parrnn layers as causal language models.

``import parrnn.hf`` (it needs ``pip install parrnn[hf]``; ``import parrnn`` alone never imports transformers)
registers `ParrnnConfig` (``model_type="parrnn"``), `ParrnnModel` and `ParrnnForCausalLM` with ``AutoConfig``,
``AutoModel`` and ``AutoModelForCausalLM``, and `ByteTokenizer` with ``AutoTokenizer``:

```python
import parrnn.hf
from transformers import AutoConfig, AutoModelForCausalLM

config = AutoConfig.for_model("parrnn", cell="mingru", vocab_size=256, hidden_size=128, num_layers=4)
model = AutoModelForCausalLM.from_config(config)
```

See docs/huggingface.md.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from parrnn.hf.cache import ParrnnCache
from parrnn.hf.configuration import ParrnnConfig, available_cells
from parrnn.hf.modeling import (
    CheckpointMismatchError,
    ParrnnForCausalLM,
    ParrnnModel,
    ParrnnPreTrainedModel,
)
from parrnn.hf.tokenizer import ByteTokenizer

AutoConfig.register(ParrnnConfig.model_type, ParrnnConfig, exist_ok=True)
AutoModel.register(ParrnnConfig, ParrnnModel, exist_ok=True)
AutoModelForCausalLM.register(ParrnnConfig, ParrnnForCausalLM, exist_ok=True)
AutoTokenizer.register(ParrnnConfig, tokenizer_class=ByteTokenizer, exist_ok=True)

__all__ = ["ByteTokenizer", "CheckpointMismatchError", "ParrnnCache", "ParrnnConfig", "ParrnnForCausalLM",
           "ParrnnModel", "ParrnnPreTrainedModel", "available_cells"]
