"""The command-line tools, one thin module each over the library: ``train`` (and ``train prepare``), ``generate``,
``score``, ``embed``, ``vep``. Run them as ``python -m enigma_fast.<tool>``; what they share is in ``_common``."""
