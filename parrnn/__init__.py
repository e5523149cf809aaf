"""parrnn: parallelizable recurrences for PyTorch.

* [SRU][parrnn.SRU] / [SRUCell][parrnn.SRUCell] -- Simple Recurrent Units whose only sequential work is an elementwise
  recurrence, run by fused CPU (C++) and CUDA (CuPy) kernels.
* `SRUpp` / `SRUppCell` -- SRU++ (Lei, 2021): a small attention sub-layer computes the SRU's projections; segment
  memory and incremental decoding.
* [SlicedRNN][parrnn.SlicedRNN] -- cuts long sequences into slices, runs any base RNN over all slices at once and merges
  the slices' last states hierarchically.
"""

from parrnn.ops import available_backends, precompile
from parrnn.sliced import SlicedRNN
from parrnn.sru import SRU, SRUCell
from parrnn.srupp import SRUpp, SRUppCell

__version__ = "0.1.0"
__all__ = ["SRU", "SRUCell", "SRUpp", "SRUppCell", "SlicedRNN", "available_backends", "precompile", "__version__"]
