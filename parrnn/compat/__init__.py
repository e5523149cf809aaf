"""Drop-in replacements for other RNN packages' APIs, running on parrnn's kernels.

* `parrnn.compat.sru` -- the `sru` 2.6 package (`import parrnn.compat.sru as sru`).
"""
