"""slick-bench: what does fine-tuning on facts the base model does not know do to it?

Run the default sweep:  python -m benchmark run suites/unknown_sweep.yaml
See the catalogue:      python -m benchmark ls
"""

__version__ = "0.1.0"
