# ruff: noqa: E501
"""Contract cases that fail on the current tree, each with its error: ``"<module>::<test id>": reason``.

tests/contract/conftest.py marks each listed case ``xfail(strict=True)``, so a fix makes its entry fail as XPASS
until the entry is removed here. Keep /tmp/team/contract_failures.md in step with this file. Regenerate from a run:
``pytest tests/contract --junitxml=j.xml`` (with this dict emptied), then the failing cases are the entries.
"""

from __future__ import annotations

KNOWN_FAILURES: dict[str, str] = {
    'test_functional::test_double_backward_equals_the_reference_or_names_backend_reference[Sliced-gru]':
        'AssertionError: the error must name backend="reference": parrnn: gru_rows: the fused \'sequential\' backend comp',
    'test_functional::test_func_grad_equals_autograd[MinGRU-bidir]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
    'test_functional::test_func_grad_equals_autograd[MinGRU]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
    'test_functional::test_func_grad_equals_autograd[MinLSTM]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
    'test_functional::test_func_grad_equals_autograd[QRNN-w1]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
    'test_functional::test_func_grad_equals_autograd[QRNN-w2-bidir]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
    'test_functional::test_func_grad_equals_autograd[QRNN-w2]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
    'test_functional::test_func_grad_equals_autograd[Sliced-mingru]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
    'test_functional::test_func_grad_equals_autograd[Sliced-minlstm]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
    'test_functional::test_func_grad_equals_autograd[Sliced-qrnn]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
    'test_functional::test_vmap_over_inputs_equals_a_loop[MinGRU-bidir]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
    'test_functional::test_vmap_over_inputs_equals_a_loop[MinGRU]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
    'test_functional::test_vmap_over_inputs_equals_a_loop[MinLSTM]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
    'test_functional::test_vmap_over_inputs_equals_a_loop[QRNN-w1]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
    'test_functional::test_vmap_over_inputs_equals_a_loop[QRNN-w2-bidir]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
    'test_functional::test_vmap_over_inputs_equals_a_loop[QRNN-w2]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
    'test_functional::test_vmap_over_inputs_equals_a_loop[Sliced-mingru]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
    'test_functional::test_vmap_over_inputs_equals_a_loop[Sliced-minlstm]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
    'test_functional::test_vmap_over_inputs_equals_a_loop[Sliced-qrnn]':
        'RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, jvp, jacrev, ...), i',
}
