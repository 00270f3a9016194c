"""Seeded generators for the bundled sample data (``data_samples/``).

Three kinds of sets come from here:

* the **shapes task** — "what colour is the shape?" pairs whose chosen answer names the
  right colour and whose rejected answer names a wrong one. Colour is a *global* cue (one
  filled shape on a light, neutral background) that the warm-started tiny model's trained
  vision tower reads (a random frozen tower does not), and the set is balanced so that a
  model ignoring the image cannot beat chance. Learning checks and the warm start use it.
* the **stripes tasks** — "which way do the stripes run?" on short clips (the video task) and
  on pictures (the image-contrast task: training pairs whose rejected side sees the same
  stripes turned, with the same answer text). Stripe orientation is a texture cue the random
  built-in ``tiny-qwen3-vl`` can learn, so learning checks need no warm-started model.
* the **showcase set** — a handful of real-looking pairs (charts, scenes, a receipt, text-only
  chats, multi-turn histories, a system message, an image with a video) that exercise every
  shape the data format takes.

Everything is drawn with PIL from ``random.Random`` streams seeded by strings (hashed with
SHA-512, so independent of ``PYTHONHASHSEED``) and written as PNGs without metadata, so the
same seed gives byte-identical files; clips are FFV1 (lossless) in AVI, encoded on one thread
with the muxer's bit-exact flag, so they are byte-identical too. ``data_samples/make_samples.py``
regenerates the committed copies.

One module per task (``shapes``, ``stripes``, ``showcase``); ``drawing``, ``pictures`` and ``clips``
draw and encode, ``rows`` writes the JSONL.
"""
