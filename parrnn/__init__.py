"""parrnn: parallelizable recurrences for PyTorch.

* [SRU][parrnn.SRU] / [SRUCell][parrnn.SRUCell] -- Simple Recurrent Units whose only sequential work is an elementwise
  recurrence, run by fused CPU (C++) and CUDA (CuPy) kernels.
* `SRUpp` / `SRUppCell` -- SRU++ (Lei, 2021): a small attention sub-layer computes the SRU's projections; segment
  memory and incremental decoding.
* [QRNN][parrnn.QRNN], [MinGRU][parrnn.MinGRU], [MinLSTM][parrnn.MinLSTM], [HGRN][parrnn.HGRN] -- cells whose gates see
  only the input, so each layer is one fused diagonal linear recurrence (`parrnn.ops.linear_recurrence`), with
  `torch.nn.LSTM`'s contract and a `step()` for streaming.
* [SlicedRNN][parrnn.SlicedRNN] -- cuts long sequences into slices, runs any base RNN over all slices at once and merges
  the slices' last states hierarchically.

Every layer follows one protocol (docs/protocol.md): ``forward(input, state=None, lengths=None, mask=None) ->
(output, state)``, ``init_state(batch_size)``, ``step(input_t, state)``; [last_output][parrnn.last_output] gives each
sequence's output at its last valid step.
"""

from parrnn._packing import last_output
from parrnn.hgrn import HGRN
from parrnn.mingru import MinGRU, MinLSTM
from parrnn.ops import available_backends, precompile
from parrnn.qrnn import QRNN
from parrnn.rglru import RGLRU
from parrnn.sliced import SlicedRNN
from parrnn.sru import SRU, SRUCell
from parrnn.srupp import SRUpp, SRUppCell

__version__ = "0.1.0"
__all__ = ["HGRN", "QRNN", "RGLRU", "SRU", "SRUCell", "MinGRU", "MinLSTM", "SRUpp", "SRUppCell", "SlicedRNN",
           "available_backends", "last_output", "precompile", "__version__"]
