"""The SRU recurrence: one contract (`contract`: the inputs as one `RecurrenceArgs`, validated once), its
definition of correct (`reference`) and the fast backends that take it -- `sequential_cpu` (C++),
`sequential_cuda` (CuPy), `scan_cpu` / `scan_cuda` behind `scan` (time-parallel, v1 only) -- chosen and
registered as a custom op by `dispatch`; `onnx` is the recurrence written for ONNX export."""
