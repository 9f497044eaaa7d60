"""slick-bench: what does fine-tuning on facts the base model does not know do to it?

Run the default sweep:  python -m benchmark run suites/unknown_sweep.yaml
See the catalogue:      python -m benchmark ls
"""

from benchmark.numerics import pin as _pin_numerics

# Before any module of ours imports torch: ATen and MKL read their code-path variables once, at first use.
_pin_numerics()

__version__ = "0.1.0"
