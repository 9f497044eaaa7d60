"""What a person reads after a run: figures (``figures``), the HTML/Markdown report (``build``: a chain of
``sections`` written onto a ``page``) and the side-by-side comparison of base models (``compare``); both choose
what they show through ``select``."""
